"""Images/s of every phase a sweep ran (Hebbian pre-training, frozen features, fine-tuning) go into
its records and under its table."""

import json

from test_finetune_protocols import TINY

from hebbopt.evaluation.report import table
from hebbopt.sweeps import semisup
from hebbopt.training import load

SWEEP = ["--sweep.methods", "[softhebb, none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
         "--sweep.protocols", "[linear, finetune, lpft]"]  # fmt: skip


def test_every_phase_reports_its_images_per_second(tmp_path):
    out = semisup(load(None, [*TINY, *SWEEP, "--run.dir", str(tmp_path / "sweep")]))
    by = {(r["method"], r["protocol"]): r for r in out["results"]}
    pre = json.loads((tmp_path / "sweep" / "pretrain" / "softhebb-seed0" / "metrics.json").read_text())
    assert by["softhebb", "linear"]["pretrain_images_per_s"] == pre["history"][0]["images_per_s"]
    assert all("pretrain_images_per_s" not in r for (m, _), r in by.items() if m == "none")
    assert by["softhebb", "linear"]["features_images_per_s"] > 0
    assert by["none", "linear"]["features_images_per_s"] > 0
    for key in [("softhebb", "finetune"), ("none", "finetune"), ("softhebb", "lpft")]:
        assert by[key]["train_images_per_s"] > 0
    text = (tmp_path / "sweep" / "table.md").read_text()
    note = next(line for line in text.splitlines() if line.startswith("- images/s"))
    assert "Hebbian pre-training" in note and "frozen features" in note and "fine-tuning" in note
    assert "finetune" in note and "lpft" in note


def cell(seed, speed=None, **extra):
    r = {"regime": 1, "method": "m", "protocol": "finetune", "seed": seed, "test": {"top1": 50.0}, **extra}
    return r if speed is None else {**r, "train_images_per_s": speed}


def test_the_note_is_the_median_over_cells_and_skips_diverged_ones():
    cells = [cell(0, 10.0), cell(1, 30.0), cell(2, 20.0), cell(3, 1000.0, diverged="loss is nan")]
    text = table(cells, "top1", dataset="d", methods=["m"], protocols=["finetune"])
    assert "- images/s (median over the cells that measured it): fine-tuning finetune 20" in text
    plain = table([cell(0), cell(1)], "top1", dataset="d", methods=["m"], protocols=["finetune"])
    assert "images/s" not in plain


def test_bf16_statistics_are_said_under_the_table():
    cells = [cell(0, statistics_dtype="bfloat16", precision="bf16"), cell(1, precision="bf16")]
    text = table(cells, "top1", dataset="d", methods=["m"], protocols=["finetune"])
    assert "- Hebbian statistics (pretrain.statistics_dtype): bfloat16" in text
    assert "statistics_dtype" not in table(
        [cell(0)], "top1", dataset="d", methods=["m"], protocols=["finetune"]
    )
