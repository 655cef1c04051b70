"""The grid of sweeps side by side: split into one process per seed and start, merged into the table
one sweep over everything writes, a failing job leaving the others to finish."""

import json
import subprocess
import sys

import pytest
from test_finetune_protocols import TINY

from hebbopt.sweeps import semisup
from hebbopt.sweeps.grid import plan, run_grid
from hebbopt.training import ConfigError, load

SWEEP = """\
sweep:
  methods: [softhebb, none]
  regimes: [40]
  seeds: [0, 1]
  protocols: [linear, finetune]
"""


def _key(r):
    return (r["method"], r["seed"], r["protocol"], r["regime"])


def test_grid_merges_to_what_one_sweep_writes(tmp_path):
    config = tmp_path / "tiny_grid.yaml"
    config.write_text(SWEEP.replace("[0, 1]", "[0]"))  # one seed: two jobs side by side are enough
    merged, failed = run_grid([config], tmp_path / "grid", parallel=2, threads=1, overrides=TINY,
                              merge_every=0.5, log=lambda s: None)  # fmt: skip
    assert failed == []
    whole = semisup(load(config, [*TINY, "--run.dir", str(tmp_path / "whole")]))
    got = sorted(merged["tiny_grid"]["results"], key=_key)
    want = sorted(whole["results"], key=_key)
    assert [_key(r) for r in got] == [_key(r) for r in want] and len(got) == 4
    for a, b in zip(got, want, strict=True):  # the same numbers, cell by cell (paths aside)
        assert a["test"] == b["test"] and a.get("val") == b.get("val"), _key(a)
    assert (
        json.loads((tmp_path / "grid" / "tiny_grid" / "results.json").read_text())["results"]
        == (merged["tiny_grid"]["results"])
    )

    def results_of(table: str) -> list[str]:  # the speeds under the table are timings, not results
        return [line for line in table.splitlines() if not line.startswith("- images/s")]

    ours = (tmp_path / "grid" / "tiny_grid" / "table.md").read_text()
    assert results_of(ours) == results_of((tmp_path / "whole" / "table.md").read_text())
    assert "- images/s" in ours
    assert (tmp_path / "grid" / "tiny_grid" / "accuracy.png").stat().st_size > 1000


def test_a_failing_job_leaves_the_others_to_finish(tmp_path):
    config = tmp_path / "tiny_grid.yaml"
    config.write_text(
        SWEEP.replace("[linear, finetune]", "[linear]").replace("[0, 1]", "[0]").replace("softhebb,", "hpca,")
    )
    # the Hebbian job's pre-training diverges (a learning rate of 1e30); the random start needs none
    script = [sys.executable, "recipes/grid.py", str(config), "--out", str(tmp_path / "grid"), "--parallel",
              "2", "--threads", "1", "--", *TINY, "--pretrain.lr", "1e30"]  # fmt: skip
    run = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "FAILED tiny_grid hpca seed 0" in run.stdout and "done tiny_grid none seed 0" in run.stdout
    records = json.loads((tmp_path / "grid" / "tiny_grid" / "results.json").read_text())["results"]
    assert [(r["method"], r["protocol"]) for r in records] == [("none", "linear")]
    (tmp_path / "grid" / "tiny_grid" / "results.json").unlink()  # --merge writes it again, running nothing
    again = subprocess.run([*script[:3], "--out", str(tmp_path / "grid"), "--merge", "--", *TINY],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "grid" / "tiny_grid" / "results.json").read_text())["results"] == records


def test_grid_plan_checks_every_configuration_first(tmp_path):
    good, bad = tmp_path / "a.yaml", tmp_path / "b.yaml"
    good.write_text(SWEEP)
    bad.write_text(SWEEP.replace("[40]", "[400]"))
    with pytest.raises(ConfigError, match="regime"):
        plan([good, bad], tmp_path / "grid", TINY)
    assert not (tmp_path / "grid").exists()
    jobs = plan([good], tmp_path / "grid", TINY)
    assert [(j.method, j.seed) for j in jobs] == [("softhebb", 0), ("softhebb", 1), ("none", 0), ("none", 1)]
    with pytest.raises(ConfigError, match="parallel"):
        run_grid([good], tmp_path / "grid", parallel=0)
    # committed records: one file per job, since the jobs run at the same time
    jobs = plan([good], tmp_path / "grid", [*TINY, "--sweep.records", "kept/results.json"])
    files = [j.args[len(j.args) - j.args[::-1].index("--sweep.records")] for j in jobs]  # the last one
    assert files == [f"kept/results.{m}-seed{s}.json" for m, s in
                     [("softhebb", 0), ("softhebb", 1), ("none", 0), ("none", 1)]]  # fmt: skip
