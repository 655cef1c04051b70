"""A diverging cell is a result, not a crash: recorded, never chosen, listed under the table; the
sweep goes on, ends with exit status 1, and a resume keeps the cell unless asked to retry it."""

import json
import sys

from test_finetune_protocols import TINY

from hebbopt.cli import semisup_main
from hebbopt.evaluation.report import choose
from hebbopt.sweeps import semisup
from hebbopt.training import load

GRID = [
    "--sweep.methods", "[none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
    "--sweep.protocols", "[finetune]", "--sweep.settings",
    "[{finetune: {lr: 1.0e-3}}, {finetune: {optimizer: sgd, lr: 1.0e+30}}, {finetune: {lr: 3.0e-3}}]",
]  # fmt: skip


def spy_on_finetune(monkeypatch) -> list[str]:
    """The folder names of the fine-tuning runs the sweep calls (a finished one reads back at once)."""
    calls = []
    module = sys.modules["hebbopt.sweeps.semisup"]
    real = module.finetune

    def spy(cfg, **kwargs):
        calls.append(cfg.run.dir.rsplit("/", 1)[-1])
        return real(cfg, **kwargs)

    monkeypatch.setattr(module, "finetune", spy)
    return calls


def test_a_diverging_setting_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    calls = spy_on_finetune(monkeypatch)
    args = [*TINY, *GRID, "--run.dir", str(tmp_path / "sweep")]
    assert semisup_main(args) == 1  # every cell ran; one diverged
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set1", "none-seed0-40pct-set2"]
    assert "1 cell(s) diverged" in capsys.readouterr().err
    records = json.loads((tmp_path / "sweep" / "results.json").read_text())["results"]
    assert [("diverged" in r, r["setting"]) for r in records] == [(False, 0), (True, 1), (False, 2)]
    assert "loss is nan" in records[1]["diverged"] or "loss is inf" in records[1]["diverged"]
    _, chosen = choose(records)
    assert chosen[40.0, "none", "finetune"] != 1
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert "- diverged: none finetune setting 1, 40 %, seed 0 (never chosen)" in table
    folder = tmp_path / "sweep" / "finetune" / "none-seed0-40pct-set1"
    assert (folder / "diverged.json").exists() and not (folder / "metrics.json").exists()
    # a resume keeps the diverged cell (and runs nothing again)
    calls.clear()
    cfg = load(None, args)
    again = semisup(cfg, resume=True)["results"]
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set2"]  # finished: read back at once
    assert [("diverged" in r) for r in again] == [False, True, False]
    # unless asked: the cell runs again (and diverges again, from its last checkpoint)
    calls.clear()
    semisup(cfg.replace(sweep={"retry_diverged": True}), resume=True)
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set1", "none-seed0-40pct-set2"]
    assert (folder / "diverged.json").exists()


def test_a_table_of_an_incomplete_grid_says_so():
    from hebbopt.evaluation.report import table

    def run(setting, seed):
        return {"regime": 5, "method": "m", "protocol": "lpft", "setting": setting, "seed": seed,
                "val": {"top1": 50.0}, "test": {"top1": 60.0}}  # fmt: skip

    full = table([run(0, 0), run(0, 1), run(1, 0), run(1, 1)], "top1", dataset="d", methods=["m"])
    assert "incomplete" not in full
    part = table([run(0, 0), run(1, 1)], "top1", dataset="d", methods=["m"])
    assert "- incomplete: 2 cell(s) of the grid have no record" in part  # no seed ran both settings
    equal = table([run(0, 0), run(1, 0), run(1, 1)], "top1", dataset="d", methods=["m"])
    assert "- incomplete: 1 cell(s) of the grid have no record" in equal  # of equals setting 0 is chosen


def test_a_grid_chosen_on_one_seed_is_complete_with_the_chosen_setting_on_the_others():
    # sweep.tune_seeds: seed 0 ran every setting, seeds 1 and 2 only the one best on seed 0's validation
    from hebbopt.evaluation.report import table

    def run(setting, seed, val=50.0):
        return {"regime": 5, "method": "m", "protocol": "finetune", "setting": setting, "seed": seed,
                "val": {"top1": val}, "test": {"top1": 60.0}}  # fmt: skip

    tuned = [run(0, 0, 40.0), run(1, 0, 45.0), run(2, 0, 42.0)]
    done = table([*tuned, run(1, 1), run(1, 2)], "top1", dataset="d", methods=["m"])
    assert "incomplete" not in done
    wrong = table([*tuned, run(1, 1), run(0, 2), run(2, 2)], "top1", dataset="d", methods=["m"])
    assert "- incomplete: 1 cell(s) of the grid have no record" in wrong  # seed 2 lacks the chosen one
    missing = table([*tuned, run(1, 1)], "top1", dataset="d", methods=["m"])
    assert "incomplete" not in missing  # seed 2 has no record at all: not a seed of this table


def test_settings_with_the_same_effective_run_run_once_and_are_reported_for_each(tmp_path, monkeypatch):
    calls = []
    module = sys.modules["hebbopt.sweeps.semisup"]
    real = module.finetune

    def spy(cfg, **kwargs):
        calls.append((kwargs.get("protocol", "finetune"), cfg.run.dir.rsplit("/", 1)[-1]))
        return real(cfg, **kwargs)

    monkeypatch.setattr(module, "finetune", spy)
    args = [*TINY, "--sweep.methods", "[none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
            "--sweep.protocols", "[finetune, lpft]", "--run.dir", str(tmp_path / "sweep"),
            "--sweep.settings", "[{finetune: {lr: 1.0e-3, lpft_lr: 1.0e-4}},"
            " {finetune: {lr: 3.0e-3, lpft_lr: 1.0e-4}}]"]  # fmt: skip
    records = semisup(load(None, args))["results"]
    # finetune reads lr: two runs; LP-FT reads lpft_lr (the same in both): one run, two records
    assert calls == [("finetune", "none-seed0-40pct-set0"), ("finetune", "none-seed0-40pct-set1"),
                     ("lpft", "none-seed0-40pct-set0")]  # fmt: skip
    lpft = [r for r in records if r["protocol"] == "lpft"]
    assert [r["setting"] for r in lpft] == [0, 1] and lpft[1]["same_as_setting"] == 0
    assert lpft[0]["test"] == lpft[1]["test"]
    assert not (tmp_path / "sweep" / "lpft" / "none-seed0-40pct-set1").exists()
