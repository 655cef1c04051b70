"""Recipes end to end on tiny synthetic data: every method, exact resume, fail-fast configs."""

import hashlib
import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import hebbopt.training.run_folder as run_folder
from hebbopt.cli import semisup_main
from hebbopt.data import load_dataset
from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, finetune, load, pretrain
from hebbopt.training.models import build_model
from hebbopt.training.run_folder import _canonical

ROOT = pathlib.Path(__file__).parents[1]
TINY = [
    "--data.name", "synthetic", "--data.synthetic_size", "96", "--data.img_size", "32",
    "--model.kwargs", "{width: 0.125}", "--run.progress", "false",
    "--pretrain.epochs", "1", "--pretrain.batch_size", "32", "--pretrain.compile", "false",
    "--finetune.epochs", "2", "--finetune.batch_size", "16", "--finetune.lr", "0.01",
    "--vae.epochs", "1", "--vae.batch_size", "32", "--vae.latents", "8",
]  # fmt: skip


def tiny(tmp_path, *extra):
    return load(None, [*TINY, "--run.dir", str(tmp_path / "run"), *extra])


def test_sweep_runs_every_method_end_to_end(tmp_path):
    cfg = tiny(tmp_path, "--sweep.methods", "[hpca, swta, vae, none]", "--sweep.regimes", "[10, 50]",
               "--sweep.seeds", "[0]", "--data.val_size", "8")  # fmt: skip
    summary = semisup(cfg)
    run = tmp_path / "run"
    got = {(r["method"], r["regime"]) for r in summary["results"]}
    assert got == {(m, s) for m in ("hpca", "swta", "vae", "none") for s in (10.0, 50.0)}
    assert json.loads((run / "results.json").read_text())["results"] == summary["results"]
    assert (run / "accuracy.png").stat().st_size > 1000
    table = (run / "table.md").read_text()
    assert table.split("\n\n")[0].count("\n") == 1 + 8 and "| 10 % | hpca |" in table
    for r in summary["results"]:
        assert 0 <= r["test"]["top1"] <= r["test"]["top5"] <= 100 and r["test"]["images"] == 24
        assert r["labelled"] == {10.0: 10, 50.0: 44}[r["regime"]]  # of 96 − 8; ≥ 1 per class
    init = build_model(cfg, load_dataset("synthetic", synthetic_size=96, img_size=32), seed=0)
    for method in ("hpca", "swta", "vae"):
        backbone = load_file(run / "pretrain" / f"{method}-seed0" / "backbone.safetensors")
        assert not torch.equal(backbone["features.0.weight"], init.features[0].weight.detach()), method
        assert torch.equal(backbone["classifier.weight"], init.classifier.weight.detach())  # head untouched
    assert (run / "pretrain" / "hpca-seed0" / "filters.png").exists()
    assert not (run / "pretrain" / "none-seed0").exists()


def test_finetune_starts_from_the_backbone_with_a_seeded_head(tmp_path):
    pre = tiny(tmp_path, "--pretrain.method", "swta", "--run.dir", str(tmp_path / "pre"))
    backbone = pretrain(pre)
    cfg = tiny(tmp_path, "--finetune.epochs", "0", "--finetune.regime", "20", "--run.seed", "0")
    metrics = finetune(cfg, backbone=backbone)
    kept = load_file(tmp_path / "run" / "model.safetensors")
    saved = load_file(backbone)
    for k in ("features.0.weight", "pre_logits.1.weight", "classifier.weight"):
        assert torch.equal(kept[k], saved[k]), k
    assert metrics["method"] == "swta" and metrics["labelled"] == round(96 * 0.2)


def interrupt_after_first_checkpoint(monkeypatch):
    real, calls = run_folder.save_checkpoint, []  # Run.save's

    def save_then_die(path, state):
        real(path, state)
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(run_folder, "save_checkpoint", save_then_die)


def uninterrupted_and_killed(tmp_path, monkeypatch, run, *extra):
    """``run`` in one folder, and in another killed right after its first checkpoint; returns the
    uninterrupted result and the killed run's configuration."""
    full = run(tiny(tmp_path, *extra, "--run.dir", str(tmp_path / "full")))
    cfg = tiny(tmp_path, *extra, "--run.dir", str(tmp_path / "cut"))
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            run(cfg)
    return full, cfg


@pytest.mark.parametrize("method", ["hpca", "vae"])
def test_pretrain_resumes_to_the_same_weights(tmp_path, monkeypatch, method):
    extra = ["--pretrain.method", method, "--pretrain.epochs", "2", "--vae.epochs", "2"]
    full, cfg = uninterrupted_and_killed(tmp_path, monkeypatch, pretrain, *extra)
    assert (tmp_path / "cut" / "checkpoint.pt").exists() and not (
        tmp_path / "cut" / "backbone.safetensors"
    ).exists()
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(cfg)
    resumed = pretrain(cfg, resume=True)
    a, b = load_file(full), load_file(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_layerwise_pretraining_resumes_mid_schedule(tmp_path, monkeypatch):
    extra = ["--pretrain.schedule", "layerwise", "--pretrain.include", "[features.0, features.4]"]
    full, cfg = uninterrupted_and_killed(tmp_path, monkeypatch, pretrain, *extra)
    a, b = load_file(full), load_file(pretrain(cfg, resume=True))
    assert all(torch.equal(a[k], b[k]) for k in a)
    stages = [h["stage"] for h in json.loads((tmp_path / "cut" / "metrics.json").read_text())["history"]]
    assert stages == [0, 1]


def test_layerwise_stages_stop_the_forward_after_their_layer_with_the_same_weights(tmp_path, monkeypatch):
    pre = importlib.import_module("hebbopt.training.pretrain")  # the package exports a function of that name
    extra = ["--pretrain.schedule", "layerwise", "--pretrain.include", "[features.0, features.4]"]
    calls = []
    real = torch.nn.Conv2d.forward
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda self, x: calls.append(self) or real(self, x))
    cut = load_file(pretrain(tiny(tmp_path / "cut", *extra)))
    stopped = len(calls)
    calls.clear()
    monkeypatch.setattr(pre, "_stop_after", lambda layer: None)  # the whole forward every time
    whole = load_file(pretrain(tiny(tmp_path / "whole", *extra)))
    assert stopped < len(calls)  # the convolutions after features.4 (and after features.0 in stage 1)
    for k in ("features.0.weight", "features.4.weight"):
        assert torch.equal(cut[k], whole[k]), k


def test_finetune_resumes_to_the_same_weights_and_accuracy(tmp_path, monkeypatch):
    extra = ["--finetune.epochs", "3", "--finetune.regime", "50", "--data.val_size", "8",
             "--finetune.lr_constant_epochs", "1", "--finetune.lr_halve_every", "1"]  # fmt: skip
    full, cfg = uninterrupted_and_killed(tmp_path, monkeypatch, finetune, *extra)
    resumed = finetune(cfg, resume=True)
    a, b = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "cut" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]
    assert [h["lr"] for h in resumed["history"]] == pytest.approx([0.01, 0.005, 0.0025])


def test_resume_refuses_a_changed_config(tmp_path):
    finetune(tiny(tmp_path, "--finetune.epochs", "1"))
    with pytest.raises(ConfigError, match=r"finetune.lr: 0.01 -> 0.02"):
        finetune(tiny(tmp_path, "--finetune.epochs", "1", "--finetune.lr", "0.02"), resume=True)


def test_resume_of_a_run_older_than_a_config_key_takes_the_key_at_its_default(tmp_path):
    first = finetune(tiny(tmp_path, "--finetune.epochs", "1"))
    config = next(tmp_path.rglob("config.yaml"))
    saved = yaml.safe_load(config.read_text())
    del saved["probe"]["normalize"]  # as a run folder written before the key existed
    config.write_text(yaml.safe_dump(saved))
    # ...and sealed by that version, over the configuration it recorded
    metrics_file = config.parent / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics.pop("sha256")
    seal = hashlib.sha256(_canonical(saved) + b"\0" + _canonical(metrics)).hexdigest()
    metrics_file.write_text(json.dumps({**metrics, "sha256": seal}))
    assert finetune(tiny(tmp_path, "--finetune.epochs", "1"), resume=True)["test"] == first["test"]
    with pytest.raises(ConfigError, match=r"probe.normalize: 'none' -> 'l2'"):
        finetune(tiny(tmp_path, "--finetune.epochs", "1", "--probe.normalize", "l2"), resume=True)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--finetune.regimes", "5"], "unknown config key finetune.regimes"),
        (["--data.name", "mnist"], "unknown dataset 'mnist'"),
        (["--sweep.regimes", "[1, 0]"], r"percentage in \(0, 100\]"),
        (["--finetune.regime", "101"], r"percentage in \(0, 100\]"),
        (["--data.name", "cifar10", "--data.root", "/nonexistent/cifar"], "no cifar10 here"),
        (["--model.name", "no_such_model"], "model.name 'no_such_model'"),
        (["--pretrain.lr", "-1"], "pretrain.lr must be a finite number > 0"),
        (["--finetune.epochs", "two"], "finetune.epochs must be int"),
    ],
)
def test_bad_configs_fail_before_any_training(tmp_path, capsys, override, message):
    code = None
    try:
        code = semisup_main([*TINY, "--run.dir", str(tmp_path / "run"), *override])
    except SystemExit as e:  # argparse's error exit
        code = e.code
    assert code == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained


def test_config_files_in_recipes_load(tmp_path, monkeypatch):
    for folder in ("cifar10/train", "cifar100/train", "tiny-imagenet-200/train", "tiny-imagenet-200/test",
                   "imagenet/train", "imagenet/val", "imagenette128/train", "imagenette128/val"):  # fmt: skip
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setenv("HEBBOPT_DATA", str(tmp_path))  # folders are checked, not read
    files = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
    assert len(files) >= 7
    for file in files:
        cfg = load(file)
        assert cfg.run.dir.startswith("runs/")
        if cfg.data.name not in ("digits", "synthetic"):
            with pytest.raises(ConfigError, match="/nonexistent/data"):
                load(file, ["--data.root", "/nonexistent/data"])
    monkeypatch.delenv("HEBBOPT_DATA")
    with pytest.raises(ConfigError, match="HEBBOPT_DATA"):
        load(ROOT / "recipes" / "configs" / "cifar10_semisup.yaml")


@pytest.mark.parametrize("schedule", ["all", "layerwise"])
def test_two_processes_shard_batches_like_one_process_with_a_double_batch(tmp_path, schedule):
    """torchrun × 2, batch 16 each == one process, batch 32: the first layer sees the same images
    per step and its statistics are all-reduced (deeper layers differ: BatchNorm is per process).
    Layerwise stages end the DDP forward early (an exception out of the hooked layer)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*TINY, "--pretrain.method", "hpca", "--pretrain.epochs", "2", "--run.cpu", "true",
            "--pretrain.schedule", schedule]  # fmt: skip
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = tmp_path / "two"
    script = str(ROOT / "recipes" / "pretrain.py")
    subprocess.run(
        [*cmd, script, *args, "--pretrain.batch_size", "16", "--run.dir", str(two)],
        check=True, env=env, timeout=300, capture_output=True,
    )  # fmt: skip
    one = pretrain(load(None, [*args, "--pretrain.batch_size", "32", "--run.dir", str(tmp_path / "one")]))
    a, b = load_file(one), load_file(two / "backbone.safetensors")
    torch.testing.assert_close(a["features.0.weight"], b["features.0.weight"], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["features.0.weight"], build_model(
        load(None, TINY), load_dataset("synthetic", synthetic_size=96, img_size=32), seed=0
    ).features[0].weight.detach())  # fmt: skip


def test_streamed_image_folder_trains_through_a_dataloader(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("val", 2)):
        for c in ("a", "b", "c"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (36, 40, 3), dtype=torch.uint8, generator=g)
                Image.fromarray(pixels.numpy()).save(tmp_path / "tree" / split / c / f"{i}.jpg")
    data = ["--data.name", "imagefolder", "--data.root", str(tmp_path / "tree"), "--data.workers", "1"]
    cfg = tiny(tmp_path, *data, "--data.cache", str(tmp_path / "cache"), "--finetune.regime", "100")
    metrics = finetune(cfg)
    assert metrics["labelled"] == 18 and metrics["test"]["images"] == 6
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]


def test_resumed_sweep_skips_finished_runs(tmp_path, monkeypatch):
    args = ("--sweep.methods", "[swta, none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]")
    first = semisup(tiny(tmp_path, *args))
    with pytest.raises(ConfigError, match="--resume"):
        semisup(tiny(tmp_path, *args))
    module = sys.modules["hebbopt.training.pretrain"]  # the package exports a function of that name
    monkeypatch.setattr(module, "hebbian_optimizer", lambda *a: pytest.fail("pre-trained again"))
    monkeypatch.setattr("torch.optim.SGD.step", lambda *a, **k: pytest.fail("fine-tuned again"))
    again = semisup(tiny(tmp_path, *args), resume=True)
    assert again["results"] == first["results"]


def test_run_files_are_readable_by_the_group_like_any_file(tmp_path):
    finetune(tiny(tmp_path, "--finetune.epochs", "1"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "metrics.json", "model.safetensors"):
        assert (tmp_path / "run" / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize(
    ("imagenette", "cifar"),
    [
        ("imagenette_softhebb_3l", "cifar10_grid_softhebb_3l"),
        ("imagenette_vgg_softhebb", "cifar10_vgg_softhebb"),
    ],
)
def test_one_set_of_hebbian_settings_across_datasets(imagenette, cifar, tmp_path, monkeypatch):
    """An Imagenette recipe's pretrain section (and network) is its CIFAR-10 counterpart's, unchanged."""
    for folder in ("cifar10/train", "imagenette128/train", "imagenette128/val"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setenv("HEBBOPT_DATA", str(tmp_path))
    a, b = (load(ROOT / "recipes" / "configs" / f"{name}.yaml") for name in (imagenette, cifar))
    assert a.to_dict()["pretrain"] == b.to_dict()["pretrain"]
    assert (a.model.name, a.model.kwargs) == (b.model.name, b.model.kwargs)
    assert (a.data.name, b.data.name) == ("imagefolder", "cifar10")
