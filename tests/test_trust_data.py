"""Trusting the data (issue 20, items 6-9 and 21): non-finite statistics, features or losses stop a
run, cached statistics are checked, every data error names its file, streamed splits are checked
before training, and the long steps show progress."""

import json
import re
import sys
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from test_probe import TINY, tiny
from torch import nn

from hebbopt.data import TensorImages, load_dataset
from hebbopt.data.datasets import FolderImages, _images_digest
from hebbopt.evaluation import extract_features, knn, linear_probe
from hebbopt.files import CorruptFileError
from hebbopt.sweeps import semisup
from hebbopt.training import load


def write_tree(root, split, per_class=3, size=(10, 12), seed=0, suffix=".png", classes=("cat", "dog")):
    g = torch.Generator().manual_seed(seed)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=g)
            Image.fromarray(pixels.numpy()).save(root / split / c / f"{i}{suffix}")


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def blobs(seed, n=40, dim=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    return torch.randn(n, dim, generator=g) + 3 * torch.eye(dim)[y], y


# item 6: non-finite statistics, features and losses


@pytest.mark.parametrize("where", ["train", "test", "val", "flipped"])
def test_linear_probe_refuses_non_finite_features(where):
    (x, y), (tx, ty) = blobs(1), blobs(2)
    vx, flipped = x.clone(), x.clone()
    bad = {"train": x, "test": tx, "val": vx, "flipped": flipped}[where]
    bad[torch.randint(len(bad), ()), 2] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"{where}.*non-finite"):
        linear_probe(x, y, tx, ty, num_classes=3, epochs=2, val=(vx, y), flipped_x=flipped)


def test_linear_probe_stops_on_a_non_finite_loss():
    (x, y), (tx, ty) = blobs(3), blobs(4)
    x, tx = x * 1e6, tx * 1e6  # finite, but the logits overflow once a step makes the weights ~1e37
    with pytest.raises(FloatingPointError, match=r"loss .* epoch 1"):
        linear_probe(x, y, tx, ty, num_classes=3, epochs=3, batch_size=8, lr=1e37, dropout=0.0)
    with pytest.raises(FloatingPointError, match=r"weights .* not finite"):  # the only step overflowed
        linear_probe(x, y, tx, ty, num_classes=3, epochs=1, batch_size=64, lr=1e37, dropout=0.0)


def test_knn_refuses_non_finite_features():
    (x, y), (tx, ty) = blobs(5), blobs(6)
    tx[3, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"test.*non-finite"):
        knn(x, y, tx, ty, k=3)


def test_extract_features_refuses_non_finite_statistics_and_features():
    images = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4))
    with pytest.raises(FloatingPointError, match="std"):
        extract_features(model, images, mean=[0.5] * 3, std=[0.2, float("nan"), 0.2])
    with torch.no_grad():
        model[1].weight[2, 7] = float("nan")
    with pytest.raises(FloatingPointError, match="non-finite"):
        extract_features(model, images, mean=[0.5] * 3, std=[0.2] * 3, batch_size=2)


@pytest.mark.parametrize(("mean", "std", "error"), [
    ([0.5, float("nan")], [0.2, 0.2], FloatingPointError),
    ([0.5, 0.5], [0.2, float("inf")], FloatingPointError),
    ([0.5, 0.5], [0.2, 0.0], ValueError),
    ([0.5], [0.2], ValueError),  # one value for two channels
])  # fmt: skip
def test_dataset_statistics_must_be_finite_and_positive(mean, std, error):
    images = torch.randint(0, 256, (4, 2, 3, 3), dtype=torch.uint8)
    with pytest.raises(error, match=r"mean|std"):
        TensorImages(images, torch.arange(4), mean, std)


@pytest.mark.parametrize("fault", ["features", "loss"])
def test_a_sweep_records_non_finite_features_or_loss_as_diverged_and_marks_nothing_done(
    tmp_path, monkeypatch, fault
):
    args = ["--sweep.methods", "[none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]",
            "--sweep.protocols", "[linear]", "--data.val_size", "8"]  # fmt: skip
    if fault == "features":
        real = sys.modules["hebbopt.evaluation.features"]._features
        monkeypatch.setattr(
            "hebbopt.evaluation.features._features", lambda *a: real(*a).mul(float("nan"))
        )  # a backbone gone NaN, or NaN statistics
    else:
        args += ["--probe.lr", "1e37"]  # weights near float32's largest: logits overflow
    (record,) = semisup(tiny(tmp_path, *args))["results"]  # a result, not the end of the sweep
    assert str(tmp_path / "run" / "linear" / "none-seed0-50pct") in record["diverged"]
    assert not list((tmp_path / "run").rglob("linear/**/metrics.json"))


def test_lpft_records_non_finite_features_naming_its_run(tmp_path, monkeypatch):
    args = ["--sweep.methods", "[none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]",
            "--sweep.protocols", "[lpft]", "--data.val_size", "8", "--probe.epochs", "3"]  # fmt: skip
    real = sys.modules["hebbopt.evaluation.features"]._features
    monkeypatch.setattr("hebbopt.evaluation.features._features", lambda *a: real(*a).mul(float("nan")))
    (record,) = semisup(tiny(tmp_path, *args))["results"]
    assert str(tmp_path / "run" / "lpft" / "none-seed0-50pct") in record["diverged"]
    assert not list((tmp_path / "run").rglob("lpft/**/metrics.json"))


# item 7: the statistics cache of streamed folders


def stats_file(cache):
    (file,) = cache.glob("*stats*.json")
    return file


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["mean"].__setitem__(0, s["mean"][0] + 0.01),  # plausible, but not what was computed
        lambda s: s["std"].__setitem__(1, 0.0),
        lambda s: s["mean"].__setitem__(2, float("nan")),
        lambda s: s.pop("std"),
    ],
)
def test_edited_statistics_cache_is_refused_with_its_path(tmp_path, edit):
    write_tree(tmp_path / "d", "train")
    write_tree(tmp_path / "d", "val", per_class=1, seed=1)
    first = load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    file = stats_file(tmp_path / "c")
    stats = json.loads(file.read_text())
    edit(stats)
    file.write_text(json.dumps(stats))
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(file))}.*delete it"):
        load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    file.unlink()
    again = load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    assert again.mean == first.mean and again.std == first.std


def test_constant_training_images_get_a_positive_std(tmp_path):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            Image.new("RGB", (9, 9), (40, 80, 120)).save(tmp_path / "d" / split / c / "0.png")
    s = load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    assert min(s.std) > 0 and torch.isfinite(s.train[0][0]).all() and torch.isfinite(s.test[1][0]).all()


# item 8: every data error names the file


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_named_in_memory_and_streamed(tmp_path, suffix):
    write_tree(tmp_path / "d", "train", suffix=suffix)
    write_tree(tmp_path / "d", "test", per_class=1, seed=1, suffix=suffix)
    bad = tmp_path / "d" / "train" / "dog" / f"1{suffix}"
    truncate(bad)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(bad))}: .*(?i:truncated)"):
        load_dataset("cifar10", tmp_path / "d", cache=tmp_path / "c", verbose=False)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(bad))}: "):
        FolderImages(tmp_path / "d" / "train", 8)[4]


def test_images_of_different_sizes_name_one(tmp_path):
    write_tree(tmp_path / "d", "train")
    write_tree(tmp_path / "d", "test", per_class=1, seed=1)
    odd = tmp_path / "d" / "train" / "dog" / "2.png"
    Image.new("RGB", (7, 7)).save(odd)
    with pytest.raises(ValueError, match=rf"{re.escape(str(odd))}.*7×7.*data.img_size"):
        load_dataset("cifar10", tmp_path / "d", cache=tmp_path / "c", verbose=False)


@pytest.mark.parametrize(
    "images", [torch.zeros(4, 3, 2, 2), torch.zeros(4, 2, 2, dtype=torch.uint8), "pixels"]
)
def test_a_cache_of_the_wrong_kind_is_named_even_with_a_matching_checksum(tmp_path, images):
    write_tree(tmp_path / "d", "train", per_class=2)
    write_tree(tmp_path / "d", "test", per_class=2, seed=1)
    load_dataset("cifar10", tmp_path / "d", cache=tmp_path / "c", verbose=False)
    (file,) = (tmp_path / "c").glob("*train*.pt")
    labels, classes = torch.arange(4), ["cat", "dog"]
    digest = _images_digest(images, labels, classes) if isinstance(images, torch.Tensor) else "0"
    torch.save({"images": images, "labels": labels, "classes": classes, "sha256": digest}, file)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(file))}: .*delete it"):
        load_dataset("cifar10", tmp_path / "d", cache=tmp_path / "c", verbose=False)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_damaged_torchvision_cifar_files_are_named(tmp_path, name):
    from torchvision.datasets import CIFAR10, CIFAR100

    source = CIFAR10 if name == "cifar10" else CIFAR100
    folder = tmp_path / "d" / source.base_folder
    folder.mkdir(parents=True)
    for file, _ in [*source.train_list, *source.test_list, (source.meta["filename"], None)]:
        (folder / file).write_bytes(b"not a pickle")
    first = folder / source.train_list[0][0]
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(first))}: .*checksum"):
        load_dataset(name, tmp_path / "d", cache=tmp_path / "c", verbose=False)
    (folder / source.train_list[0][0]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(first))}: .*missing"):
        load_dataset(name, tmp_path / "d", cache=tmp_path / "c", verbose=False)


# item 9: streamed splits are checked before any training


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_streamed_load_checks_every_split_up_front_once(tmp_path, monkeypatch, suffix):
    write_tree(tmp_path / "d", "train", suffix=suffix)
    write_tree(tmp_path / "d", "val", per_class=2, seed=1, suffix=suffix)
    bad = tmp_path / "d" / "val" / "dog" / f"1{suffix}"
    good = bad.read_bytes()
    truncate(bad)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(bad))}: .*replace or delete"):
        load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    bad.write_bytes(good)
    load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    with monkeypatch.context() as m:  # the verdict is cached: no image is opened again
        m.setattr("PIL.Image.open", lambda *a, **k: pytest.fail("an image was opened again"))
        load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")
    truncate(bad)  # an edited folder is checked again
    with pytest.raises(CorruptFileError, match=re.escape(str(bad))):
        load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "c")


def test_streamed_check_shows_progress_only_when_asked(tmp_path, capsys):
    write_tree(tmp_path / "d", "train")
    write_tree(tmp_path / "d", "val", per_class=1, seed=1)
    load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""
    load_dataset("imagefolder", tmp_path / "d", img_size=8, cache=tmp_path / "loud", progress=True)
    err = capsys.readouterr().err
    assert "checking train images" in err and "checking val images" in err and "statistics" in err


# item 21: progress of the probes' features


def test_extract_features_shows_progress_only_when_asked(capsys):
    images = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 4))
    quiet = extract_features(model, images, batch_size=2)
    assert capsys.readouterr().err == ""
    loud = extract_features(model, images, batch_size=2, progress=True, desc="features (test)")
    err = capsys.readouterr().err
    assert "features (test)" in err and "/4" in err
    assert torch.equal(quiet, loud)


@pytest.mark.parametrize(("progress", "main"), [(True, True), (True, False), (False, True)])
def test_sweep_features_show_progress_on_the_main_process_when_the_run_does(monkeypatch, progress, main):
    cfg = load(None, [*TINY, "--run.progress", str(progress).lower(), "--sweep.regimes", "[50]",
                      "--data.val_size", "8", "--probe.flip", "true"])  # fmt: skip
    splits = load_dataset("synthetic", img_size=32, synthetic_size=96)
    module = sys.modules["hebbopt.sweeps.semisup"]
    seen = []

    def extract(model, images, **kw):
        seen.append((kw.get("progress", False), kw.get("desc", "")))
        return extract_features(model, images, **kw)

    monkeypatch.setattr(module, "extract_features", extract)
    accelerator = SimpleNamespace(device=torch.device("cpu"), is_main_process=main)
    features = module._Features(cfg, splits, None, accelerator)
    features.labelled(torch.arange(10))
    assert len(seen) == 4 and {p for p, _ in seen} == {progress and main}
    assert len({d for _, d in seen}) == 4  # each bar says what it computes
