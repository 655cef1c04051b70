"""Datasets and labelled subsets: deterministic, class-balanced, disjoint, normalised, cached."""

import math

import pytest
import torch
from PIL import Image

from hebbopt.data import labelled_subset, load_dataset, validation_split
from hebbopt.data.datasets import FolderImages, check_source


def unbalanced_labels(seed, n=997, classes=7):
    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(classes, generator=g) + 0.2
    return torch.multinomial(weights, n, replacement=True, generator=g)


@pytest.mark.parametrize("percent", [1, 2.5, 5, 10, 25, 100])
def test_balanced_subset_takes_each_class_share(percent):
    y = unbalanced_labels(int(percent * 10))
    idx = labelled_subset(y, percent, seed=3)
    assert len(idx) == len(set(idx.tolist())) == max(1, round(len(y) * percent / 100))
    sizes = torch.bincount(y)
    got = torch.bincount(y[idx], minlength=len(sizes))
    for c in range(len(sizes)):  # largest remainder over floor(share), with at least one per class
        least = max(1, math.floor(len(idx) * sizes[c].item() / len(y)))
        assert least <= got[c] <= least + 1


def test_subsets_are_deterministic_nested_and_seeded():
    y = unbalanced_labels(0)
    a, b = labelled_subset(y, 5, seed=1), labelled_subset(y, 5, seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, labelled_subset(y, 5, seed=2))
    assert torch.isin(labelled_subset(y, 1, seed=1), a).all()
    assert torch.isin(a, labelled_subset(y, 10, seed=1)).all()


def test_plain_random_subset_and_exclusion():
    y = unbalanced_labels(1)
    val = validation_split(y, 100)
    assert len(val) == 100
    idx = labelled_subset(y, 10, seed=0, balanced=False, exclude=val)
    assert len(idx) == round((len(y) - 100) * 0.1)
    assert not torch.isin(idx, val).any()
    assert not torch.isin(labelled_subset(y, 100, seed=0, exclude=val), val).any()


@pytest.mark.parametrize("bad", [0, -1, 100.5, float("nan")])
def test_percent_outside_range_raises(bad):
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        labelled_subset(torch.arange(10), bad, seed=0)
    with pytest.raises(TypeError):
        labelled_subset(torch.arange(10), True, seed=0)


def test_digits_embedded_and_normalised_by_train_statistics():
    d = load_dataset("digits", img_size=32)
    assert (len(d.train), len(d.test), d.in_chans, d.img_size, d.num_classes) == (1437, 360, 1, 32, 10)
    x, _ = d.train.batch(torch.arange(len(d.train)))
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3
    xt, _ = d.test.batch(torch.arange(len(d.test)))
    assert abs(xt.mean().item()) > 1e-4  # test split normalised with the train statistics, not its own


def write_folder(root, split, per_class, size=(6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    for c in ("cat", "dog", "emu"):
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=g)
            Image.fromarray(pixels.numpy()).save(root / split / c / f"{i}.png")


def test_image_folder_decoded_once_and_cached(tmp_path, monkeypatch):
    write_folder(tmp_path / "data", "train", 4)
    write_folder(tmp_path / "data", "test", 2, seed=1)
    a = load_dataset("cifar10", tmp_path / "data", cache=tmp_path / "cache", verbose=False)
    assert (len(a.train), len(a.test), a.classes) == (12, 6, ["cat", "dog", "emu"])
    assert torch.equal(a.train.labels, torch.tensor([0] * 4 + [1] * 4 + [2] * 4))
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    monkeypatch.setattr("hebbopt.data.datasets._decode_folder", lambda *a: pytest.fail("decoded twice"))
    b = load_dataset("cifar10", tmp_path / "data", cache=tmp_path / "cache", verbose=False)
    assert torch.equal(a.train.images, b.train.images)
    raw = a.train.images.double() / 255
    assert a.mean == pytest.approx(raw.mean(dim=(0, 2, 3)).tolist())


def test_streamed_folder_resizes_and_normalises(tmp_path):
    write_folder(tmp_path / "tiny", "train", 3, size=(10, 12))
    write_folder(tmp_path / "tiny", "val", 1, size=(10, 12), seed=2)
    s = load_dataset("imagefolder", tmp_path / "tiny", img_size=8, cache=tmp_path / "cache")
    assert isinstance(s.train, FolderImages) and len(s.test) == 3
    x, y = s.train[4]
    assert tuple(x.shape) == (3, 8, 8) and y.item() == 1
    xs = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert xs.mean(dim=(0, 2, 3)).abs().max() < 1e-5  # all 9 training images were the statistics' sample


def test_streamed_statistics_follow_an_edited_training_folder(tmp_path):
    write_folder(tmp_path / "tiny", "train", 3, size=(10, 12))
    write_folder(tmp_path / "tiny", "val", 1, size=(10, 12), seed=2)
    first = load_dataset("imagefolder", tmp_path / "tiny", img_size=8, cache=tmp_path / "cache")
    again = load_dataset("imagefolder", tmp_path / "tiny", img_size=8, cache=tmp_path / "cache")
    assert again.mean == first.mean and len(list((tmp_path / "cache").glob("*stats*"))) == 1
    white = Image.fromarray(torch.full((10, 12, 3), 255, dtype=torch.uint8).numpy())
    white.save(tmp_path / "tiny" / "train" / "cat" / "0.png")  # an image replaced in place
    edited = load_dataset("imagefolder", tmp_path / "tiny", img_size=8, cache=tmp_path / "cache")
    xs = torch.stack([FolderImages(tmp_path / "tiny" / "train", 8)[i][0] for i in range(9)]).double()
    assert edited.mean == pytest.approx(xs.mean(dim=(0, 2, 3)).tolist())
    assert edited.mean != first.mean


@pytest.mark.parametrize(
    ("name", "root", "message"),
    [
        ("mnist", None, "unknown dataset"),
        ("cifar10", None, "needs a folder"),
        ("cifar100", "/nonexistent/x", "no cifar100 here"),
        ("imagefolder", "/nonexistent/y", "expected class folders"),
    ],
)
def test_missing_data_fails_with_what_to_do(name, root, message, monkeypatch):
    monkeypatch.delenv("HEBBOPT_DATA", raising=False)
    with pytest.raises(ValueError, match=message):
        check_source(name, root)
