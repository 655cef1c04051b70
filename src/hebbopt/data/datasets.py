"""Named datasets as train/test splits normalised by the training split's statistics.

Small datasets (digits, synthetic, CIFAR, any ImageFolder tree with ``in_memory``) live in memory
as uint8 tensors, decoded once and cached (``$HEBBOPT_CACHE`` or ``~/.cache/hebbopt``); large
ImageFolder trees (ImageNet) are streamed from disk with a resize and centre crop, every image of
both splits checked once first (so that a damaged test image fails before training, not after it).
Caches carry a checksum tied to the files they came from: a damaged or edited cache is refused with
its path. An image that does not decode, a damaged CIFAR file, a statistic that is not finite
(``FloatingPointError``) or not positive: each error names the file or the split.

| name | source | needs |
|---|---|---|
| ``digits`` | scikit-learn's 8×8 digits (1797 images, split 80/20 with a fixed seed), resized | nothing |
| ``synthetic`` | class-dependent random patterns, for smoke tests | nothing |
| ``cifar10`` | ``root/{train,test}/<class>/*.png`` or torchvision's CIFAR-10 files | ``root`` |
| ``cifar100`` | as ``cifar10``, with torchvision's CIFAR-100 files | ``root`` |
| ``imagefolder`` | ``root/train`` and ``root/test`` (or ``root/val``) class folders | ``root`` |

``root`` is ``data.root`` (``~`` and ``$VARS`` expanded), else ``$HEBBOPT_DATA/<name>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from hebbopt.files import CorruptFileError, atomic_write_bytes

DATASETS = ("digits", "synthetic", "cifar10", "cifar100", "imagefolder")
"""The names :func:`load_dataset` accepts (``data.name`` of a recipe)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".JPEG", ".PNG", ".JPG")
"""Suffixes of the files decoded from class folders (in any letter case); other files are skipped."""

_SUFFIXES = frozenset(s.lower() for s in IMAGE_SUFFIXES)


def _is_image_file(path: str | os.PathLike) -> bool:
    return pathlib.Path(path).suffix.lower() in _SUFFIXES


def _class_folders(folder: pathlib.Path) -> list[str]:
    """The sorted class folders; a split without any, or a class without images, is refused."""
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{folder}: no class folders")
    for cls in classes:
        with os.scandir(folder / cls) as entries:
            if not any(e.is_file() and _is_image_file(e.name) for e in entries):
                raise ValueError(
                    f"{folder / cls}: class folder holds no images ({', '.join(sorted(_SUFFIXES))}); "
                    "add images or remove the folder"
                )
    return classes


def _unreadable(path: str | os.PathLike, error: Exception) -> CorruptFileError:
    first = (str(error).strip().splitlines() or [""])[0]
    return CorruptFileError(
        f"{path}: unreadable image ({type(error).__name__}: {first}); replace or delete the file"
    )


def _open_rgb(path: str | os.PathLike):
    """8-bit RGB; 16-bit images are scaled to 8 bits, not clipped; an undecodable file is named."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16-bit grayscale (0–65535)
                a = np.asarray(im).astype(np.float64)
                gray = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
                return Image.fromarray(gray).convert("RGB")
            return im.convert("RGB")
    except MemoryError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... without the file's name
        raise _unreadable(path, e) from None


def _decode_error(path: str) -> CorruptFileError | None:
    """Whether the image at ``path`` decodes, as cheaply as a full read allows."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (1, 1))  # JPEG decodes at 1/8 scale, ~3× faster, yet reads every byte
            im.load()
    except MemoryError:
        raise
    except Exception as e:
        return _unreadable(path, e)
    return None


def _statistics(
    mean: Sequence[float], std: Sequence[float], channels: int, where: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` as tuples, refused unless finite, positive (std) and one per channel."""
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if not len(mean) == len(std) == channels:
        raise ValueError(
            f"{where}: mean and std need one value per channel ({channels}), got {mean} and {std}"
        )
    if not all(math.isfinite(v) for v in mean + std):
        raise FloatingPointError(
            f"{where}: the normalisation statistics are not finite (mean {mean}, std {std}); every "
            "image would become NaN"
        )
    if min(std) <= 0:
        raise ValueError(f"{where}: std must be > 0 (it divides every pixel), got {std}")
    return mean, std


def _channel_statistics(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``N×C×H×W`` values on the 0–1 scale; the std is at least 1e-3,
    so that a constant channel normalises to 0, not NaN."""
    x = x.double()
    return tuple(x.mean(dim=(0, 2, 3)).tolist()), tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())


class TensorImages(Dataset):
    """Images held as a uint8 ``N×C×H×W`` tensor; items come out as normalised float32.

    A quarter of the memory of float32 images; each batch is converted on the fly,
    ``x = (images / 255 − mean) / std`` per channel.

    Args:
        images: uint8 images, ``N×C×H×W``.
        labels: classes, ``N`` integers (kept as int64).
        mean: per-channel means on the 0–1 scale (the training split's).
        std: per-channel standard deviations on the 0–1 scale (the training split's).

    Raises:
        ValueError: ``images`` is not a uint8 ``N×C×H×W`` tensor with one label per image, or
            ``mean`` and ``std`` do not have one value per channel, or a ``std`` is not positive.
        FloatingPointError: ``mean`` or ``std`` is not finite.

    Examples:
        >>> white = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
        >>> ds = TensorImages(white, torch.tensor([3, 7]), mean=[0.5], std=[0.25])
        >>> x, y = ds[1]
        >>> tuple(x.shape), x.dtype, x[0, 0, 0].item(), y.item()      # (1 − 0.5) / 0.25 = 2
        ((1, 4, 4), torch.float32, 2.0, 7)
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
    ):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"images must be uint8 N×C×H×W with one label each, got {images.dtype} "
                f"{tuple(images.shape)} and {len(labels)} labels"
            )
        mean, std = _statistics(mean, std, images.shape[1], "TensorImages")
        self.images, self.labels = images, labels.long()
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised images and labels at ``index``, as one batch (no per-item Python work).

        Args:
            index: 1-D integer tensor of positions in the dataset.

        Returns:
            ``(x, y)``: float32 images ``len(index)×C×H×W``, normalised, and their int64 labels.
        """
        x = (self.images[index].float() - self._mean) / self._std
        return x, self.labels[index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.batch(torch.tensor([i]))
        return x[0], y[0]


@dataclasses.dataclass
class ImageSplits:
    """A dataset's splits and what a model needs to know about them (what :func:`load_dataset` returns).

    Args:
        name: the dataset's name, one of :data:`DATASETS`.
        train: the training split: a :class:`TensorImages`, or a :class:`FolderImages` when streamed.
        test: the test split, normalised with the training split's statistics.
        classes: class names, in label order.
        in_chans: channels per image.
        img_size: image height and width (images are square).
        mean: per-channel means of the training split, on the 0–1 scale.
        std: per-channel standard deviations of the training split, on the 0–1 scale.
    """

    name: str
    train: Dataset
    test: Dataset
    classes: list[str]
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def train_labels(self) -> torch.Tensor:
        """The training split's labels (int64, one per image), as
        :func:`~hebbopt.data.regimes.labelled_subset` takes them."""
        return self.train.labels  # type: ignore[attr-defined]


def _cache_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    path = override or os.environ.get("HEBBOPT_CACHE") or pathlib.Path.home() / ".cache" / "hebbopt"
    return pathlib.Path(path).expanduser()


def _data_root(name: str, root: str | os.PathLike | None) -> pathlib.Path | None:
    """``root`` (``~`` and ``$VARS`` expanded), else ``$HEBBOPT_DATA/<name>``, else None."""
    if root:
        expanded = os.path.expandvars(str(root))
        if "$" in expanded:
            raise ValueError(f"data root {root!r}: an environment variable in it is not set")
        return pathlib.Path(expanded).expanduser()
    base = os.environ.get("HEBBOPT_DATA")
    return pathlib.Path(base) / name if base else None


def check_source(name: str, root: str | os.PathLike | None, download: bool = False) -> None:
    """Fail fast, before any training, when a dataset cannot be found.

    Only folders are looked at, nothing is read: ``digits`` and ``synthetic`` need nothing;
    ``imagefolder`` needs ``train/`` and ``test/`` (or ``val/``) under its folder; CIFAR needs
    ``train/<class>/`` folders or torchvision's extracted files there, unless ``download``.

    Args:
        name: the dataset's name.
        root: its folder, as :func:`load_dataset` takes it.
        download: torchvision may download CIFAR, so a folder without a copy is accepted.

    Raises:
        ValueError: unknown ``name``, no ``root`` for a dataset that needs one, an unset ``$VAR``
            in ``root``, or a missing folder.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {DATASETS}")
    if name in ("digits", "synthetic"):
        return
    path = _data_root(name, root)
    if path is None:
        raise ValueError(
            f"dataset {name!r} needs a folder: set data.root (or the HEBBOPT_DATA environment variable)"
        )
    if name == "imagefolder":
        if not (path / "train").is_dir() or not ((path / "test").is_dir() or (path / "val").is_dir()):
            raise ValueError(f"{path}: expected class folders under {path}/train and {path}/test (or val)")
        return
    if (path / "train").is_dir() or _torchvision_cifar(name, path) or download:
        return
    raise ValueError(
        f"{path}: no {name} here (neither train/<class>/ image folders nor torchvision's files); "
        "point data.root at it, or set data.download: true where the network allows"
    )


def _torchvision_cifar(name: str, path: pathlib.Path) -> bool:
    return (path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")).is_dir()


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    img_size: int | None = None,
    in_memory: bool | None = None,
    download: bool = False,
    cache: str | os.PathLike | None = None,
    synthetic_size: int = 512,
    verbose: bool = True,
    progress: bool | None = None,
) -> ImageSplits:
    """The train and test splits of a dataset, normalised by the training split's statistics.

    Args:
        name: one of :data:`DATASETS`.
        root: the dataset's folder (``~`` and ``$VARS`` expanded; default
            ``$HEBBOPT_DATA/<name>``); unused by ``digits`` and ``synthetic``.
        img_size: images are resized to ``img_size``×``img_size`` (default: the native size; 32 for
            ``digits`` and ``synthetic``, 224 for streamed folders).
        in_memory: decode into a cached uint8 tensor (default: everything but ``imagefolder``).
        download: let torchvision download CIFAR when ``root`` has no copy.
        cache: cache folder (default ``$HEBBOPT_CACHE``, else ``~/.cache/hebbopt``).
        synthetic_size: training images of the ``synthetic`` dataset (a quarter as many test images).
        verbose: print a line when decoding.
        progress: progress bars for the long steps: decoding a folder, checking a streamed folder's
            images, its statistics (default: ``verbose``).

    A streamed folder's images are all checked before it is returned (each file decoded once, at a
    reduced scale where the format allows; the verdict is cached like the statistics, keyed by the
    files' names, sizes and modification times), so that a damaged test image fails the run before
    it trains, not after. Streamed statistics are cached with a checksum tied to the folder.

    Returns:
        The splits, their classes, image shape and the training split's per-channel statistics.

    Raises:
        ValueError: unknown name or missing data (see :func:`check_source`), train and test class
            folders that differ, an empty class folder (named), images of different sizes (one named).
        CorruptFileError: an image that does not decode, a cache file that is damaged or edited, or a
            torchvision CIFAR file that fails its checksum (each named).
        FileNotFoundError: a torchvision CIFAR file is missing (named).

    Examples:
        >>> splits = load_dataset("synthetic", img_size=8, synthetic_size=40)
        >>> len(splits.train), len(splits.test), splits.num_classes, tuple(splits.train[0][0].shape)
        (40, 10, 10, (3, 8, 8))
    """
    check_source(name, root, download)
    progress = verbose if progress is None else progress
    if name == "digits":
        return _in_memory(name, *_digits(img_size or 32), img_size or 32)
    if name == "synthetic":
        return _in_memory(name, *_synthetic(img_size or 32, synthetic_size), img_size or 32)
    path = _data_root(name, root)
    assert path is not None
    if in_memory is None:
        in_memory = name != "imagefolder"
    if not in_memory:
        return _streamed(name, path, img_size or 224, cache, progress)
    splits = {}
    for split in ("train", "test"):
        splits[split] = _cached(name, path, split, img_size, download, cache, verbose, progress)
    _same_classes(path, splits["train"][2], splits["test"][2])
    size = splits["train"][0].shape[-1]
    return _in_memory(name, splits["train"], splits["test"], splits["train"][2], size)


def _in_memory(name, train, test, classes, size) -> ImageSplits:
    images, labels = train[0], train[1]
    mean, std = _statistics(
        *_channel_statistics(images.double() / 255), images.shape[1], f"{name}: training split"
    )
    return ImageSplits(
        name=name,
        train=TensorImages(images, labels, mean, std),
        test=TensorImages(test[0], test[1], mean, std),
        classes=list(classes),
        in_chans=images.shape[1],
        img_size=size,
        mean=mean,
        std=std,
    )


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or (images.shape[-1] == size and images.shape[-2] == size):
        return images
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round().clamp(0, 255).to(torch.uint8)


def _digits(size: int):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            f"the digits dataset ships inside scikit-learn, which is not installed ({e}): "
            "pip install 'hebbopt[recipes]'"
        ) from e

    data = load_digits()
    images = torch.tensor(data.images * 255 / 16).round().to(torch.uint8).unsqueeze(1)
    labels = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(images))
    images = _resize(images, size)
    classes = [str(c) for c in range(10)]
    return (
        (images[perm[:cut]], labels[perm[:cut]], classes),
        (images[perm[cut:]], labels[perm[cut:]], classes),
        classes,
    )


def _synthetic(size: int, n_train: int):
    """Ten classes, each a fixed random low-frequency pattern plus noise (learnable, not trivial)."""
    g = torch.Generator().manual_seed(0)
    protos = F.interpolate(torch.rand(10, 3, 4, 4, generator=g), size=(size, size), mode="bilinear")

    def draw(n: int):
        labels = torch.arange(n) % 10
        x = 0.6 * protos[labels] + 0.4 * torch.rand(n, 3, size, size, generator=g)
        return (x * 255).round().to(torch.uint8), labels

    classes = [f"class{c}" for c in range(10)]
    train, test = draw(n_train), draw(max(10, n_train // 4))
    return (*train, classes), (*test, classes), classes


def _same_classes(path, train: list[str], test: list[str]) -> None:
    if list(train) != list(test):
        raise ValueError(
            f"{path}: train and test class folders differ (only in train: {sorted(set(train) - set(test))}, "
            f"only in test: {sorted(set(test) - set(train))}); labels would not match"
        )


def _fingerprint(source: pathlib.Path) -> str:
    """Every file under ``source``: relative path, size and modification time, hashed."""
    digest = hashlib.sha256()
    if source.is_dir():
        for f in sorted(p for p in source.rglob("*") if p.is_file()):
            st = f.stat()
            digest.update(f"{f.relative_to(source)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _images_digest(images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{tuple(images.shape)}|{'|'.join(classes)}|".encode())
    digest.update(images.contiguous().reshape(-1).numpy().tobytes())
    digest.update(labels.long().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _read_cache(file: pathlib.Path):
    advice = "delete it and the images are decoded again"
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
        images, labels, classes, expected = blob["images"], blob["labels"], blob["classes"], blob["sha256"]
        if not (
            isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4
            and isinstance(labels, torch.Tensor) and labels.shape == (len(images),)
            and not labels.dtype.is_floating_point and all(isinstance(c, str) for c in classes)
        ):  # fmt: skip
            raise TypeError("not uint8 N×C×H×W images with one integer label each and class names")
        intact = _images_digest(images, labels, classes) == expected
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CorruptFileError(
            f"{file}: unreadable dataset cache ({type(e).__name__}: {first}); {advice}"
        ) from None
    if not intact:
        raise CorruptFileError(f"{file}: dataset cache fails its checksum (damaged); {advice}")
    return images, labels, classes


def _cached(name, path, split, img_size, download, cache, verbose, progress):
    folder = None
    if (path / split).is_dir() or (split == "test" and (path / "val").is_dir()):
        folder = path / split if (path / split).is_dir() else path / "val"
    source = folder if folder is not None else path / (
        "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    )  # fmt: skip
    # the key covers the files (names, sizes, modification times): an edited dataset is decoded again
    identity = f"v2|{path.resolve()}|{split}|{img_size}|{_fingerprint(source)}"
    key = hashlib.sha1(identity.encode()).hexdigest()[:12]
    file = _cache_dir(cache) / f"{name}-{split}-{key}.pt"
    if file.exists():
        return _read_cache(file)
    if folder is not None:
        images, labels, classes = _decode_folder(folder, img_size, verbose, progress, file)
    else:
        images, labels, classes = _torchvision(name, path, split, download)
        images = _resize(images, img_size)
    digest = _images_digest(images, labels, classes)
    _atomic_save({"images": images, "labels": labels, "classes": classes, "sha256": digest}, file)
    return images, labels, classes


def _decode_folder(folder: pathlib.Path, img_size, verbose, progress, file):
    import numpy as np

    classes = _class_folders(folder)
    files = [
        (f, c)
        for c, cls in enumerate(classes)
        for f in sorted((folder / cls).iterdir())
        if f.is_file() and _is_image_file(f)
    ]
    if verbose:
        print(f"decoding {len(files)} images from {folder} (once; cached at {file})", flush=True)
    images, labels = [], []
    for f, c in tqdm(files, desc=f"decoding {folder.name}", unit="img", leave=False, disable=not progress):
        img = torch.from_numpy(np.array(_open_rgb(f))).permute(2, 0, 1).contiguous()
        images.append(_resize(img.unsqueeze(0), img_size)[0] if img_size else img)
        labels.append(c)
        if images[-1].shape != images[0].shape:
            (h0, w0), (h, w) = images[0].shape[1:], images[-1].shape[1:]
            raise ValueError(
                f"{f}: {h}×{w} pixels, unlike {files[0][0]} ({h0}×{w0}); images of different sizes: "
                "set data.img_size to resize them all"
            )
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), classes


def _torchvision(name, path, split, download):
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    base = path / cls.base_folder
    if not download:  # torchvision's own check names no file ("Dataset not found or corrupted")
        listed = cls.train_list if split == "train" else cls.test_list
        for file, md5 in [*listed, (cls.meta["filename"], cls.meta["md5"])]:
            if not (base / file).is_file():
                raise FileNotFoundError(
                    f"{base / file}: missing from torchvision's {name} files; restore it, or delete {base} "
                    "and set data.download: true where the network allows"
                )
            if not check_integrity(str(base / file), md5):
                raise CorruptFileError(
                    f"{base / file}: fails its checksum (damaged, or not torchvision's {name} file); restore "
                    f"it, or delete {base} and set data.download: true where the network allows"
                )
    ds = cls(str(path), train=split == "train", download=download)
    return (
        torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
        torch.tensor(ds.targets),
        list(ds.classes),
    )


def _atomic_save(obj, file: pathlib.Path) -> None:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(file, buffer.getvalue())


class FolderImages(Dataset):
    """An ImageFolder streamed from disk: resize, centre crop, normalise (for ImageNet-sized sets).

    Each image's shorter side is resized to ``img_size / crop_pct``, the centre ``img_size``×``img_size``
    is cropped out and scaled to 0–1, then normalised when ``mean`` and ``std`` are given.

    Args:
        folder: a folder of class folders (``train/<class>/*.JPEG``).
        img_size: output height and width.
        mean: per-channel means on the 0–1 scale to normalise with; None leaves values in [0, 1].
        std: per-channel standard deviations on the 0–1 scale, used with ``mean``.
        crop_pct: the share of the resized image's side that the centre crop keeps.

    Items are decoded when read; an image that does not decode raises
    :class:`~hebbopt.files.CorruptFileError` naming it (:func:`load_dataset` checks every image of a
    streamed split first).

    Raises:
        ValueError: ``folder`` has no class folders, or a class folder holds no image (named), or
            ``mean`` and ``std`` are not three positive values.
        FloatingPointError: ``mean`` or ``std`` is not finite.
    """

    def __init__(self, folder: pathlib.Path, img_size: int, mean=None, std=None, crop_pct: float = 0.875):
        from torchvision import datasets, transforms

        steps = [
            transforms.Resize(round(img_size / crop_pct)),
            transforms.CenterCrop(img_size),
            transforms.PILToTensor(),
            transforms.ConvertImageDtype(torch.float32),
        ]
        if mean is not None:
            steps.append(transforms.Normalize(*_statistics(mean, std, 3, f"{folder}: normalisation")))
        _class_folders(pathlib.Path(folder))  # the same checks and messages as in memory
        self.folder = datasets.ImageFolder(
            str(folder), transform=transforms.Compose(steps), loader=_open_rgb, is_valid_file=_is_image_file
        )
        self.labels = torch.tensor(self.folder.targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        x, y = self.folder[i]
        return x, torch.tensor(y)


def _streamed(name, path, img_size, cache, progress) -> ImageSplits:
    train_dir = path / "train"
    test_dir = path / "test" if (path / "test").is_dir() else path / "val"
    _same_classes(path, _class_folders(train_dir), _class_folders(test_dir))
    # the files themselves (names, sizes, mtimes) key the caches: an edited folder is checked again
    # and gets new statistics, not a stale verdict
    prints = {folder: _fingerprint(folder) for folder in (train_dir, test_dir)}
    for folder, files in prints.items():
        _check_images(name, folder, files, cache, progress)
    mean, std = _streamed_statistics(name, path, img_size, prints[train_dir], cache, progress)
    train = FolderImages(train_dir, img_size, mean, std)
    test = FolderImages(test_dir, img_size, mean, std)
    return ImageSplits(name, train, test, train.folder.classes, 3, img_size, mean, std)


def _check_images(name, folder: pathlib.Path, files: str, cache, progress) -> None:
    """Every image a streamed split will read decodes, else the first that does not is named;
    the verdict is cached for these very files."""
    from torchvision.datasets.folder import make_dataset

    identity = f"checked-v1|{folder.resolve()}|{files}"
    verdict = _cache_dir(cache) / f"{name}-checked-{hashlib.sha1(identity.encode()).hexdigest()[:12]}.json"
    try:
        if json.loads(verdict.read_text()).get("identity") == identity:
            return
    except (OSError, ValueError, AttributeError):
        pass  # no verdict, or a damaged one: check again
    classes = _class_folders(folder)
    paths = [
        p for p, _ in make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, None, _is_image_file)
    ]
    bad = []
    desc = f"checking {folder.name} images (once)"
    # PIL decodes without the GIL: threads check several files at once; a block at a time, so that
    # ImageNet's 1.3 M files are not all pending futures at once
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=len(paths), desc=desc, unit="img", leave=False, disable=not progress) as bar,
    ):
        for start in range(0, len(paths), 1024):
            block = paths[start : start + 1024]
            bad += [error for error in pool.map(_decode_error, block) if error is not None]
            bar.update(len(block))
    if bad:
        more = f" ({len(bad) - 1} more unreadable images under {folder})" if len(bad) > 1 else ""
        raise CorruptFileError(f"{bad[0]}{more}")
    atomic_write_bytes(verdict, json.dumps({"identity": identity, "images": len(paths)}).encode())


def _statistics_digest(identity: str, mean, std) -> str:
    return hashlib.sha256(json.dumps([identity, list(mean), list(std)]).encode()).hexdigest()


def _streamed_statistics(name, path, img_size, files, cache, progress):
    """The training split's statistics, from up to 2000 training images drawn with a fixed seed;
    cached with a checksum that ties them to the folder's files, so an edited cache is refused."""
    identity = f"stats-v2|{path.resolve()}|{img_size}|{files}"
    file = _cache_dir(cache) / f"{name}-stats-{hashlib.sha1(identity.encode()).hexdigest()[:12]}.json"
    advice = "delete it and they are computed again"
    if file.exists():
        try:
            blob = json.loads(file.read_text())
            mean, std = [float(v) for v in blob["mean"]], [float(v) for v in blob["std"]]
            expected = blob["sha256"]
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptFileError(
                f"{file}: unreadable statistics cache ({type(e).__name__}: {e}); {advice}"
            ) from None
        if _statistics_digest(identity, mean, std) != expected:
            raise CorruptFileError(
                f"{file}: statistics cache fails its checksum (edited or damaged); {advice}"
            )
        try:
            return _statistics(mean, std, 3, str(file))
        except (FloatingPointError, ValueError) as e:
            raise CorruptFileError(f"{e}; {advice}") from None
    raw = FolderImages(path / "train", img_size)
    pick = torch.randperm(len(raw), generator=torch.Generator().manual_seed(0))[:2000]
    desc = f"statistics of {path.name}/train"
    sample = [raw[int(i)][0] for i in tqdm(pick, desc=desc, unit="img", leave=False, disable=not progress)]
    mean, std = _statistics(*_channel_statistics(torch.stack(sample)), 3, f"{path / 'train'}: statistics")
    blob = {"mean": mean, "std": std, "sha256": _statistics_digest(identity, mean, std)}
    atomic_write_bytes(file, json.dumps(blob).encode())
    return mean, std
