"""A user's ImageFolder: images of other modes are converted to RGB; an unreadable image or images of
mixed sizes are named before any training (Imagenette-style folders, tiny)."""

import numpy as np
import pytest
from PIL import Image

from hebbopt.data import load_dataset
from hebbopt.files import CorruptFileError


def _folder(root, sizes=((8, 8),) * 2, modes=("RGB", "RGB")):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, ((h, w), mode) in enumerate(zip(sizes, modes, strict=True)):
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(root / split / cls / f"{i}.png")
    return root


def test_other_modes_become_rgb(tmp_path):
    root = _folder(tmp_path / "d", modes=("L", "RGBA"))
    splits = load_dataset("imagefolder", root, in_memory=True, cache=tmp_path / "cache", verbose=False)
    assert splits.in_chans == 3 and tuple(splits.train.images.shape) == (4, 3, 8, 8)
    grey = splits.train.images[0]
    assert (grey[0] == grey[1]).all() and (grey[1] == grey[2]).all()  # a grey image: three equal channels


def test_mixed_sizes_are_named_unless_resized(tmp_path):
    root = _folder(tmp_path / "d", sizes=((8, 8), (8, 6)))
    with pytest.raises(ValueError, match=r"1\.png: 8×6 pixels, unlike .*0\.png \(8×8\).*data\.img_size"):
        load_dataset("imagefolder", root, in_memory=True, cache=tmp_path / "cache", verbose=False)
    splits = load_dataset(
        "imagefolder", root, in_memory=True, img_size=8, cache=tmp_path / "c2", verbose=False
    )
    assert tuple(splits.train.images.shape[1:]) == (3, 8, 8)


def test_an_unreadable_image_is_named(tmp_path):
    root = _folder(tmp_path / "d")
    (root / "train" / "b" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(CorruptFileError, match=r"broken\.jpg: unreadable image"):
        load_dataset("imagefolder", root, in_memory=True, cache=tmp_path / "cache", verbose=False)
