"""Fine-tuning budgets: a budget of optimizer steps, checkpoints every n epochs with an exact resume,
and LP-FT's starting point (the probe's head) counted as its epoch 0."""

import json
import math
import sys

import pytest
import torch
from test_finetune_protocols import TINY

from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, finetune, load
from hebbopt.training import run_folder as run_folder_module
from hebbopt.weights import read_weights


def _cfg(tmp_path, *extra):
    return load(None, [*TINY, "--run.dir", str(tmp_path / "run"), "--finetune.regime", "40", *extra])


@pytest.mark.parametrize("steps", [1, 4, 7])
def test_steps_budget_trains_whole_epochs_covering_it(tmp_path, steps):
    m = finetune(_cfg(tmp_path / str(steps), "--finetune.steps", str(steps), "--finetune.epochs", "50"))
    full, rest = divmod(m["labelled"], 16)
    per_epoch = full + (rest >= 2)
    assert per_epoch > 1
    assert len(m["history"]) == math.ceil(steps / per_epoch)
    # the schedule ends where the budget ends: cosine reaches 0 after the last epoch
    assert m["history"][-1]["lr"] < m["history"][0]["lr"] or len(m["history"]) == 1


def test_budget_options_are_checked():
    for args, message in [
        (["--finetune.steps", "-1"], "finetune.steps must be >= 0"),
        (["--finetune.lpft_steps", "-3"], "finetune.lpft_steps must be >= 0"),
        (["--run.checkpoint_every", "0"], "run.checkpoint_every must be a finite number > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(None, args)
    # a budget of steps replaces lpft_epochs, so the quarter rule on epochs does not apply
    assert load(None, ["--sweep.protocols", "[lpft]", "--probe.epochs", "50", "--finetune.lpft_epochs",
                       "1", "--finetune.lpft_steps", "200"])  # fmt: skip


def test_checkpoint_every_writes_fewer_and_resumes_exactly(tmp_path, monkeypatch):
    saved = []
    real = run_folder_module.save_checkpoint

    def spy(path, state):
        saved.append(state["epoch"])
        real(path, state)
        if kill_at and state["epoch"] == kill_at:
            raise KeyboardInterrupt("killed after a checkpoint")

    monkeypatch.setattr(run_folder_module, "save_checkpoint", spy)
    kill_at = 0
    args = ["--finetune.epochs", "5", "--run.checkpoint_every", "2", "--finetune.lr", "0.01"]
    whole = finetune(_cfg(tmp_path / "a", *args))
    assert saved == [2, 4, 5]
    saved.clear()
    kill_at = 2
    cfg = _cfg(tmp_path / "b", *args)
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg)
    kill_at = 0
    resumed = finetune(cfg, resume=True)
    assert saved == [2, 4, 5]
    assert resumed["test"] == whole["test"]
    a = read_weights(tmp_path / "a" / "run" / "model.safetensors")
    b = read_weights(tmp_path / "b" / "run" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lpft_keeps_the_probe_when_fine_tuning_only_loses_on_validation(tmp_path, monkeypatch):
    finetune_module = sys.modules["hebbopt.training.finetune"]
    real_evaluate, calls, states = finetune_module.evaluate, [], []

    def evaluate(model, dataset, indices, accelerator, cfg):  # validation falls after epoch 0
        r = real_evaluate(model, dataset, indices, accelerator, cfg)
        if indices is not None:
            calls.append(r["top1"])
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            r = {**r, "top1": r["top1"] if len(calls) == 1 else 0.0}
        return r

    monkeypatch.setattr(finetune_module, "evaluate", evaluate)
    args = [*TINY, "--run.dir", str(tmp_path / "sweep"), "--sweep.methods", "[softhebb]", "--sweep.regimes",
            "[40]", "--sweep.seeds", "[0]", "--sweep.protocols", "[lpft]", "--finetune.lpft_lr", "0.01",
            "--finetune.val_every", "1"]  # fmt: skip
    record = semisup(load(None, args))["results"][0]
    metrics = json.loads((tmp_path / "sweep" / "lpft" / "softhebb-seed0-40pct" / "metrics.json").read_text())
    assert len(calls) == 3 and metrics["best_epoch"] == 0 and record["best_epoch"] == 0
    assert metrics["history"][0]["epoch"] == 0 and metrics["history"][0]["val"]["top1"] == calls[0]
    # the epoch-0 validation is the probe's head on the frozen backbone: the probe's own score
    assert abs(calls[0] - metrics["probe"]["val"]["top1"]) <= 100 / metrics["validation"] + 1e-9
    kept = read_weights(tmp_path / "sweep" / "lpft" / "softhebb-seed0-40pct" / "model.safetensors")
    assert all(torch.equal(kept[k], states[0][k]) for k in kept)
    assert not all(torch.equal(kept[k], states[-1][k]) for k in kept)


def test_each_phase_and_start_trains_at_its_own_rate_for_its_own_epochs(tmp_path, monkeypatch):
    """From the runs' own histories, not the configuration handed in: fine-tuning at finetune.lr for
    finetune.epochs from either start, LP-FT's second phase at lpft_lr for lpft_epochs, from a head the
    probe trained (not the seeded initialisation)."""
    from hebbopt.training.models import build_model

    finetune_module = sys.modules["hebbopt.training.finetune"]
    real_start, heads = finetune_module.start_model, []

    def start(cfg, splits, backbone, head=None):
        if head is not None:
            init = build_model(cfg, splits, seed=cfg.run.seed, drop_rate=cfg.finetune.dropout,
                               head_norm=cfg.finetune.head_norm).head.weight  # fmt: skip
            heads.append((head[0].clone(), init.detach().clone()))
        return real_start(cfg, splits, backbone, head)

    monkeypatch.setattr(finetune_module, "start_model", start)
    args = [*TINY, "--run.dir", str(tmp_path / "sweep"), "--sweep.methods", "[softhebb, none]",
            "--sweep.regimes", "[40]", "--sweep.seeds", "[0]", "--sweep.protocols", "[finetune, lpft]",
            "--finetune.lr", "0.004", "--finetune.epochs", "2", "--finetune.lpft_lr", "0.0007",
            "--finetune.lpft_epochs", "3", "--probe.epochs", "5"]  # fmt: skip
    semisup(load(None, args))
    for method in ("softhebb", "none"):
        folder = f"{method}-seed0-40pct"
        ft = json.loads((tmp_path / "sweep" / "finetune" / folder / "metrics.json").read_text())
        assert [e["epoch"] for e in ft["history"]] == [1, 2]
        assert ft["history"][0]["lr"] == pytest.approx(0.004, rel=1e-12), method
        lp = json.loads((tmp_path / "sweep" / "lpft" / folder / "metrics.json").read_text())
        assert [e["epoch"] for e in lp["history"]] == [0, 1, 2, 3]  # the probe's head, then 3 epochs
        assert lp["history"][1]["lr"] == pytest.approx(0.0007, rel=1e-12), method
        assert 1 <= lp["probe"]["best_epoch"] <= 5  # the probe trained (its kept epoch counts from 1)
    assert len(heads) == 2
    for trained, init in heads:  # the probe trained the head LP-FT starts from
        assert trained.shape == init.shape and not torch.allclose(trained, init)


@pytest.mark.parametrize("batch", [2, 16, 100])
def test_scoring_batches_are_four_fine_tuning_batches_at_most_256(tmp_path, batch):
    # what fine-tuning fits in memory scores in batches 4× as large (a 210 px network on a CPU
    # fine-tuned at 16 per process ran out of memory scoring in batches of 256)
    from accelerate import Accelerator

    from hebbopt.data.datasets import load_dataset
    from hebbopt.training.batches import evaluate

    cfg = _cfg(tmp_path, "--finetune.batch_size", str(batch))
    test = load_dataset("synthetic", synthetic_size=1200, img_size=8).test  # 300 images
    sizes = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(10))
    graded = []
    model.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    model.register_forward_hook(lambda m, args, out: graded.append(out.requires_grad))
    r = evaluate(model, test, None, Accelerator(cpu=True), cfg)
    assert r["images"] == sum(sizes) == len(test)
    assert not any(graded)  # scored without autograd: no activations kept for a backward pass
    assert max(sizes) == min(256, 4 * batch, len(test))
