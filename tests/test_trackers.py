"""Trackers through accelerate (``run.log_with``), read back with TensorBoard's own event reader."""

import json
import pathlib

import pytest
import torch
from safetensors.torch import load_file

from hebbopt.cli import pretrain_main
from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, finetune, load, pretrain
from hebbopt.training.tracking import Tracker

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY = [
    "--data.name", "synthetic", "--data.synthetic_size", "96", "--data.img_size", "32",
    "--model.kwargs", "{width: 0.125}", "--run.progress", "false",
    "--pretrain.epochs", "2", "--pretrain.batch_size", "32", "--pretrain.compile", "false",
    "--finetune.epochs", "2", "--finetune.batch_size", "16", "--finetune.lr", "0.01",
]  # fmt: skip


def tiny(folder, *extra):
    return load(None, [*TINY, "--run.dir", str(folder), *extra])


def events(folder: pathlib.Path) -> EventAccumulator:
    """Every event file directly in ``folder``, as TensorBoard reads them (nothing left out)."""
    assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
    everything = {"scalars": 0, "images": 0, "histograms": 0, "tensors": 0}  # 0: keep every event
    acc = EventAccumulator(str(folder), size_guidance=everything)
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def test_digits_pretraining_writes_scalars_diagnostics_histograms_and_filter_images(tmp_path):
    run = tmp_path / "digits_hpca"
    code = pretrain_main([
        "--data.name", "digits", "--data.cache", str(tmp_path / "cache"), "--model.kwargs", "{width: 0.125}",
        "--pretrain.epochs", "2", "--pretrain.batch_size", "256", "--pretrain.compile", "false",
        "--run.progress", "false", "--run.dir", str(run),
        "--run.log_with", "tensorboard", "--run.log_every", "2",
    ])  # fmt: skip
    assert code == 0
    acc = events(run)  # in the run folder itself
    tags = acc.Tags()
    per_epoch = 6  # 1437 digits for training, batches of 256, the last one of 157 kept
    logged = list(range(0, 2 * per_epoch, 2))  # every 2nd step of both epochs, from step 0
    layers = json.loads((run / "metrics.json").read_text())["layers"]
    assert len(layers) == 5  # the hidden layers of hebb_alexnet_6l
    for name in layers:
        assert steps(acc, f"hebbian/{name}/update") == logged, name
        updates = [e.value for e in acc.Scalars(f"hebbian/{name}/update")]
        norms = [e.value for e in acc.Scalars(f"hebbian/{name}/norm")]
        assert all(0 < u < 10 for u in updates) and all(n > 0 for n in norms), (name, updates, norms)
        assert f"hebbian/{name}/ever_won" not in tags["scalars"]  # HPCA has no winners
        assert f"weights/{name}" in tags["histograms"]
        assert steps(acc, f"epoch/relative_change/{name}") == [per_epoch, 2 * per_epoch]
    assert [e.value for e in acc.Scalars("hebbian/lr")] == pytest.approx([1e-3] * len(logged))
    assert steps(acc, "epoch/images_per_s") == [per_epoch, 2 * per_epoch]
    images = acc.Images("filters")
    assert [e.step for e in images] == [per_epoch, 2 * per_epoch]
    assert images[0].width > 10 and images[0].height > 10 and images[0].encoded_image_string[:4] == b"\x89PNG"


def test_sweep_logs_each_run_under_its_folder_and_the_table_as_text(tmp_path):
    run = tmp_path / "sweep"
    semisup(tiny(run, "--sweep.methods", "[swta, none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]",
                 "--data.val_size", "8", "--run.log_with", "tensorboard",
                 "--run.log_every", "1"))  # fmt: skip
    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {"pretrain/swta-seed0/hebbian/features.0/update", "pretrain/swta-seed0/hebbian/features.0/norm",
            "finetune/swta-seed0-50pct/train/loss", "finetune/swta-seed0-50pct/train/lr",
            "finetune/swta-seed0-50pct/epoch/loss", "finetune/swta-seed0-50pct/epoch/lr",
            "finetune/swta-seed0-50pct/val/top1", "finetune/none-seed0-50pct/test/top1",
            "results/finetune/swta/50pct", "results/finetune/none/50pct"} <= scalars  # fmt: skip
    assert not any(t.startswith("pretrain/none") for t in scalars)  # nothing to pre-train
    # soft-WTA is competitive: the fraction of neurons that ever won only grows
    won = [e.value for e in acc.Scalars("pretrain/swta-seed0/hebbian/features.0/ever_won")]
    assert len(won) > 1 and 0 < won[0] and won == sorted(won) and won[-1] <= 1, won
    assert "pretrain/swta-seed0/filters" in acc.Tags()["images"]
    test = acc.Scalars("finetune/none-seed0-50pct/test/top1")[0].value
    assert acc.Scalars("results/finetune/none/50pct")[0].value == pytest.approx(test)
    lrs = [e.value for e in acc.Scalars("finetune/swta-seed0-50pct/epoch/lr")]
    assert lrs == pytest.approx([0.01, 0.01])
    text = acc.Tensors("results/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| 50 % | swta | finetune |" in text and "| 50 % | none | finetune |" in text
    # the sub-runs' folders hold no tracker files of their own: one tracker run per command
    assert not list((run / "pretrain").rglob("events.out.tfevents.*"))


def test_no_tracker_by_default_and_log_with_may_change_on_resume(tmp_path):
    cfg = tiny(tmp_path / "ft", "--finetune.epochs", "1")
    assert cfg.run.log_with is None and cfg.run.log_every == 50
    first = finetune(cfg)
    assert not list((tmp_path / "ft").rglob("events.out.tfevents.*"))
    tracked = tiny(tmp_path / "ft", "--finetune.epochs", "1", "--run.log_with", "tensorboard")
    again = finetune(tracked, resume=True)
    assert again["test"] == first["test"]  # finished: read back, trackers do not make it another run
    # the weights do not depend on the trackers (diagnostics only at logged steps, no other draws)
    a = pretrain(tiny(tmp_path / "a", "--pretrain.method", "swta"))
    b = pretrain(tiny(tmp_path / "b", "--pretrain.method", "swta", "--run.log_with", "tensorboard",
                      "--run.log_every", "1"))  # fmt: skip
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--run.log_with", "no_such_tracker"], "run.log_with: unknown tracker 'no_such_tracker'"),
        (["--run.log_with", "[tensorboard, 3]"], "run.log_with: unknown tracker 3"),
        (["--run.log_every", "0"], "run.log_every must be >= 1"),
    ],
)
def test_bad_tracker_settings_fail_when_the_config_is_read(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        tiny(tmp_path / "run", *override)


class _Accelerator:
    """What :class:`Tracker` reads of an accelerator, on a process that is not the main one."""

    def __init__(self):
        self.log_with, self.trackers, self.is_main_process, self.opened = ["tensorboard"], [], False, []

    def init_trackers(self, name, config=None):
        self.opened.append(name)  # accelerate opens trackers on the main process only

    def log(self, values, step=None):
        raise AssertionError("logged on a process that is not the main one")


def test_other_processes_log_nothing(tmp_path):
    accelerator = _Accelerator()
    cfg = tiny(tmp_path / "run", "--run.log_with", "tensorboard", "--run.log_every", "1")
    tracker = Tracker(cfg, accelerator)
    assert tracker.owner and not tracker.active and not tracker.due(0)
    tracker.log({"loss": 1.0}, 0)
    tracker.filters(None, 0)
    tracker.close()
