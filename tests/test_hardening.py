"""Recipes hardening (issue 13): no code runs from a run folder, damage is caught and named, bad
settings fail before a run folder exists, resumes refuse what they cannot continue."""

import errno
import json
import os
import pathlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from test_recipes import TINY, interrupt_after_first_checkpoint, tiny

import hebbopt.training.setup as training_setup
from hebbopt.cli import finetune_main, pretrain_main, semisup_main
from hebbopt.data import load_dataset
from hebbopt.files import CorruptFileError, atomic_write
from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, finetune, pretrain
from hebbopt.training.checkpoints import save_checkpoint
from hebbopt.training.models import build_model
from hebbopt.weights import read_weights, save_weights


def killed_finetune(tmp_path, monkeypatch, *extra):
    """A fine-tuning run killed right after its first checkpoint; returns its configuration."""
    cfg = tiny(tmp_path, "--finetune.epochs", "2", *extra)
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    return cfg


def flip(path: pathlib.Path, at: float = 0.5, n: int = 8) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i : i + n] = bytes(b ^ 0xFF for b in data[i : i + n])
    path.write_bytes(bytes(data))


def truncate(path: pathlib.Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


class Planted:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# --- 1. security -------------------------------------------------------------------------------


def test_planted_pickle_checkpoint_never_runs(tmp_path, monkeypatch):
    cfg = killed_finetune(tmp_path, monkeypatch)
    checkpoint, marker = tmp_path / "run" / "checkpoint.pt", tmp_path / "pwned"
    torch.save({"rng": Planted(marker)}, checkpoint)
    torch.load(checkpoint, weights_only=False)  # the file does run code when fully unpickled
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CorruptFileError, match=str(checkpoint)):
        finetune(cfg, resume=True)
    assert not marker.exists()
    with open(checkpoint, "wb") as f:  # a plain pickle (no zip container)
        pickle.dump(Planted(marker), f)
    with pytest.raises(CorruptFileError, match=str(checkpoint)):
        finetune(cfg, resume=True)
    assert not marker.exists()


def test_every_torch_load_is_weights_only():
    root = pathlib.Path(__file__).parents[1] / "src"
    for file in root.rglob("*.py"):
        for line in file.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{file}: {line.strip()}"


# --- 2. integrity ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [flip, truncate])
def test_damaged_checkpoint_stops_the_resume_naming_it(tmp_path, monkeypatch, damage):
    cfg = killed_finetune(tmp_path, monkeypatch)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    damage(checkpoint)
    with pytest.raises(CorruptFileError, match=str(checkpoint)):
        finetune(cfg, resume=True)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("damage", [flip, truncate, lambda p: p.write_bytes(b"")])
def test_damaged_backbone_is_refused_before_any_folder(tmp_path, damage):
    backbone = save_weights(torch.nn.Linear(64, 32), tmp_path / "b.safetensors")
    assert read_weights(backbone).keys() == {"weight", "bias"}
    damage(backbone)
    with pytest.raises(CorruptFileError, match=str(backbone)):
        read_weights(backbone)
    with pytest.raises(CorruptFileError, match=str(backbone)):
        finetune(tiny(tmp_path), backbone=backbone)
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_stops_the_run_not_done(tmp_path):
    pre = tiny(tmp_path, "--pretrain.method", "swta", "--run.dir", str(tmp_path / "pre"))
    model = build_model(pre, load_dataset("synthetic", synthetic_size=96, img_size=32), seed=0)
    with torch.no_grad():
        model.features[0].weight.fill_(float("nan"))
    backbone = save_weights(model, tmp_path / "nan.safetensors")  # a valid file of NaN weights
    with pytest.raises(FloatingPointError, match="loss is nan"):
        finetune(tiny(tmp_path), backbone=backbone)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert finetune_main([*TINY, "--run.dir", str(tmp_path / "other"), "--backbone", str(backbone)]) == 1


def test_damaged_run_files_are_named(tmp_path, monkeypatch):
    cfg = killed_finetune(tmp_path, monkeypatch)
    config = tmp_path / "run" / "config.yaml"
    good = config.read_text()
    config.write_text("data: {name: [unclosed\n")
    with pytest.raises(CorruptFileError, match=str(config)):
        finetune(cfg, resume=True)
    config.write_text(good)
    metrics = tmp_path / "run" / "metrics.json"
    metrics.write_text('{"done": tr')
    with pytest.raises(CorruptFileError, match=str(metrics)):
        finetune(cfg, resume=True)


def test_disk_full_says_so_and_names_the_file(tmp_path, monkeypatch):
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(OSError, match=f"disk full.*{target}"):
        atomic_write(target, full)
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: full(self))
    with pytest.raises(OSError, match=r"disk full.*checkpoint\.pt"):
        save_checkpoint(tmp_path / "checkpoint.pt", {"epoch": 1})


# --- 3. data -----------------------------------------------------------------------------------


def write_images(root, split, classes=("cat", "dog"), per_class=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=g)
            Image.fromarray(pixels.numpy()).save(root / split / c / f"{i}.png")


def test_in_memory_test_split_must_have_the_training_classes(tmp_path):
    write_images(tmp_path / "d", "train", ("a", "b"))
    write_images(tmp_path / "d", "test", ("b",))
    for in_memory in (True, False):
        with pytest.raises(ValueError, match=r"class folders differ.*only in train: \['a'\]"):
            load_dataset("imagefolder", tmp_path / "d", in_memory=in_memory, img_size=6, cache=tmp_path / "c")


def test_edited_dataset_is_decoded_again(tmp_path):
    write_images(tmp_path / "d", "train")
    write_images(tmp_path / "d", "test")
    a = load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    edited = tmp_path / "d" / "train" / "cat" / "0.png"
    Image.fromarray(np.zeros((6, 6, 3), dtype=np.uint8)).save(edited)
    os.utime(edited, ns=(1, 1))  # even an older modification time is a change
    b = load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    assert b.train.images[0].sum() == 0 and not torch.equal(a.train.images, b.train.images)
    write_images(tmp_path / "d", "train", ("emu",))  # a new class folder (in both splits)
    write_images(tmp_path / "d", "test", ("emu",))
    c = load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    assert c.classes == ["cat", "dog", "emu"] and len(c.train) == 6


def test_damaged_data_cache_is_named(tmp_path):
    write_images(tmp_path / "d", "train")
    write_images(tmp_path / "d", "test")
    s = load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    cache = sorted((tmp_path / "c").glob("*train*.pt"))[0]
    data = cache.read_bytes()
    flip(cache, at=data.find(s.train.images.numpy().tobytes()[:64]) / len(data))  # in the pixels
    with pytest.raises(CorruptFileError, match=str(cache)):
        load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    load_dataset("imagefolder", tmp_path / "d", img_size=4, cache=tmp_path / "s")  # streamed statistics
    stats = next((tmp_path / "s").glob("*stats*.json"))
    stats.write_text('{"mean": [0.5')
    with pytest.raises(CorruptFileError, match=str(stats)):
        load_dataset("imagefolder", tmp_path / "d", img_size=4, cache=tmp_path / "s")


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    levels = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800).astype(np.uint16)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            Image.fromarray(levels).save(tmp_path / "d" / split / c / "0.png")
    expected = torch.from_numpy(np.round(levels / 257).astype(np.uint8))
    s = load_dataset("imagefolder", tmp_path / "d", in_memory=True, cache=tmp_path / "c", verbose=False)
    assert torch.equal(s.train.images[0, 0], expected) and torch.equal(s.train.images[0, 2], expected)
    streamed = load_dataset("imagefolder", tmp_path / "d", img_size=6, cache=tmp_path / "c")
    raw = streamed.train.folder.loader(tmp_path / "d" / "train" / "a" / "0.png")
    assert torch.equal(torch.from_numpy(np.array(raw))[..., 1], expected)


def test_empty_class_folder_named_in_every_mode(tmp_path):
    write_images(tmp_path / "d", "train")
    write_images(tmp_path / "d", "test")
    empty = tmp_path / "d" / "train" / "emu"
    empty.mkdir()
    (tmp_path / "d" / "train" / "emu" / "notes.txt").write_text("not an image")
    for in_memory in (True, False):
        with pytest.raises(ValueError, match=f"{empty}: class folder holds no images"):
            load_dataset("imagefolder", tmp_path / "d", in_memory=in_memory, img_size=6, cache=tmp_path / "c")


# --- 4. run folders ----------------------------------------------------------------------------


def test_resume_of_a_missing_folder_or_config_is_refused(tmp_path, monkeypatch, capsys):
    missing = [*TINY, "--run.dir", str(tmp_path / "nowhere"), "--resume"]
    with pytest.raises(SystemExit) as e:
        finetune_main(missing)
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    cfg = killed_finetune(tmp_path, monkeypatch)
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(ConfigError, match=r"config\.yaml is missing"):
        finetune(cfg.replace(finetune={"lr": 0.05}), resume=True)
    with pytest.raises(SystemExit) as e:
        finetune_main([*TINY, "--finetune.epochs", "2", "--run.dir", str(tmp_path / "run"), "--resume"])
    assert e.value.code == 2 and "holds no config.yaml" in capsys.readouterr().err


def test_resume_refuses_another_backbone_and_another_script(tmp_path, monkeypatch):
    a = save_weights(build_model(tiny(tmp_path), load_dataset("synthetic", synthetic_size=96,
                                        img_size=32), seed=0), tmp_path / "a.safetensors")  # fmt: skip
    b = save_weights(build_model(tiny(tmp_path), load_dataset("synthetic", synthetic_size=96,
                                        img_size=32), seed=1), tmp_path / "b.safetensors")  # fmt: skip
    cfg = tiny(tmp_path, "--finetune.epochs", "2")
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg, backbone=a)
    with pytest.raises(ConfigError, match="different input files: backbone"):
        finetune(cfg, backbone=b, resume=True)
    with pytest.raises(ConfigError, match="different input files: backbone"):
        finetune(cfg, resume=True)
    pretrain(tiny(tmp_path, "--run.dir", str(tmp_path / "pre"), "--pretrain.method", "swta"))
    with pytest.raises(ConfigError, match="holds a pretrain run, not a finetune run"):
        finetune(tiny(tmp_path, "--run.dir", str(tmp_path / "pre"), "--pretrain.method", "swta"), resume=True)
    assert finetune(cfg, backbone=a, resume=True)["done"]


def test_run_folder_spelled_differently_is_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny(tmp_path, "--finetune.epochs", "2", "--run.dir", "run")
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg)
    (tmp_path / "run" / "checkpoint.pt12345.tmp").write_bytes(b"half a checkpoint")
    spelled = str(tmp_path / "run") + "/"  # absolute, with a trailing slash
    again = finetune(tiny(tmp_path, "--finetune.epochs", "2", "--run.dir", spelled), resume=True)
    assert again["done"] and not list((tmp_path / "run").glob("*.tmp"))


def test_resumed_sweep_never_shrinks_its_summary_files(tmp_path, monkeypatch):
    args = ("--sweep.methods", "[none]", "--sweep.regimes", "[20, 50]", "--sweep.seeds", "[0, 1]")
    first = semisup(tiny(tmp_path, *args))
    results = tmp_path / "run" / "results.json"
    table, png = (tmp_path / "run" / "table.md").read_text(), (tmp_path / "run" / "accuracy.png").read_bytes()
    assert len(json.loads(results.read_text())["results"]) == 4

    from matplotlib.figure import Figure

    def killed_plot(self, *a, **k):
        pathlib.Path(a[0]).write_bytes(b"partial")
        raise KeyboardInterrupt("killed while plotting")

    monkeypatch.setattr(Figure, "savefig", killed_plot)
    with pytest.raises(KeyboardInterrupt):
        semisup(tiny(tmp_path, *args), resume=True)
    assert json.loads(results.read_text())["results"] == first["results"]
    assert (tmp_path / "run" / "table.md").read_text() == table
    assert (tmp_path / "run" / "accuracy.png").read_bytes() == png
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_pretrain_method_none_and_missing_backbone_exit_2_before_anything(tmp_path, monkeypatch, capsys):
    run = [*TINY, "--run.dir", str(tmp_path / "run")]
    assert pretrain_main([*run, "--pretrain.method", "none"]) == 2
    assert "nothing to pre-train" in capsys.readouterr().err
    monkeypatch.setattr(training_setup, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    assert finetune_main([*run, "--backbone", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors: no such file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# --- 5. configuration strings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ("{width:0.5}", r"'width:0.5' has no value.*accepts \[.*'width'"),
        ("{widht: 0.5}", r"unexpected keyword argument 'widht'.*accepts \[.*'width'"),
    ],
)
def test_bad_model_kwargs_exit_2_naming_the_accepted_keys(tmp_path, capsys, kwargs, message):
    with pytest.raises(SystemExit) as e:
        semisup_main([*TINY, "--run.dir", str(tmp_path / "run"), f"--model.kwargs={kwargs}"])
    assert e.value.code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()
    cfg = tiny(tmp_path, f"--model.kwargs={kwargs}")
    with pytest.raises(ConfigError, match="accepts"):
        build_model(cfg, load_dataset("synthetic", synthetic_size=20, img_size=32), seed=0)
