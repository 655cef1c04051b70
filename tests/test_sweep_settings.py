"""A resumed grid may leave out a setting none of whose cells finished (one that diverged, say):
the others keep their folders and finished cells; a finished setting, or a new one, is refused."""

import json

import pytest
import yaml
from test_diverged_cells import GRID, spy_on_finetune
from test_finetune_protocols import TINY

from hebbopt.cli import semisup_main
from hebbopt.sweeps import semisup
from hebbopt.training import load
from hebbopt.training.config import ConfigError

SETTINGS = [
    "{finetune: {lr: 1.0e-3}}",
    "{finetune: {optimizer: sgd, lr: 1.0e+30}}",
    "{finetune: {lr: 3.0e-3}}",
]


def args_with(tmp_path, *keep):
    i = GRID.index("--sweep.settings")
    grid = [*GRID[:i], "--sweep.settings", "[" + ", ".join(SETTINGS[k] for k in keep) + "]"]
    return [*TINY, *grid, "--run.dir", str(tmp_path / "sweep")]


@pytest.fixture
def calls(monkeypatch):
    return spy_on_finetune(monkeypatch)


def test_a_resume_may_leave_out_a_setting_whose_cells_diverged(tmp_path, calls):
    assert semisup_main(args_with(tmp_path, 0, 1, 2)) == 1  # setting 1 diverges
    first = {
        r["setting"]: r for r in json.loads((tmp_path / "sweep" / "results.json").read_text())["results"]
    }
    calls.clear()
    results = semisup(load(None, args_with(tmp_path, 0, 2)), resume=True)["results"]
    # the kept settings run under their first indices: their finished cells are read back as they were
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set2"]
    assert [r["setting"] for r in results] == [0, 2]
    assert [r["test"] for r in results] == [first[0]["test"], first[2]["test"]]
    assert "diverged" not in (tmp_path / "sweep" / "table.md").read_text()
    started = json.loads((tmp_path / "sweep" / "settings.json").read_text())["settings"]
    assert len(started) == 3 and started[1]["finetune"]["lr"] == 1e30
    # the shorter list is now the folder's: resuming with it again changes nothing
    calls.clear()
    again = semisup(load(None, args_with(tmp_path, 0, 2)), resume=True)["results"]
    assert [r["test"] for r in again] == [r["test"] for r in results]


def test_leaving_out_a_finished_setting_is_refused_and_writes_nothing(tmp_path, calls):
    semisup_main(args_with(tmp_path, 0, 1, 2))
    config = (tmp_path / "sweep" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"sweep\.settings\[0\].*finished"):
        semisup(load(None, args_with(tmp_path, 1, 2)), resume=True)
    assert (tmp_path / "sweep" / "config.yaml").read_text() == config
    assert len(yaml.safe_load(config)["sweep"]["settings"]) == 3


def test_a_new_setting_on_resume_is_still_a_different_configuration(tmp_path, calls):
    semisup_main(args_with(tmp_path, 0, 1, 2))
    args = args_with(tmp_path, 0, 2)
    i = args.index("--sweep.settings")
    args[i + 1] = "[" + SETTINGS[0] + ", {finetune: {lr: 5.0e-3}}]"
    with pytest.raises(ConfigError, match="different configuration"):
        semisup(load(None, args), resume=True)


def test_only_settings_runs_part_of_the_grid_and_the_records_join_the_parts(tmp_path, calls):
    # sweep.only_settings: a long setting for one start, or the chosen setting on another seed, runs
    # alone under its own index; the parts' records (sweep.records) make the whole grid again.
    records = str(tmp_path / "committed.json")

    def part(folder, *only):
        extra = ["--sweep.only_settings", f"[{', '.join(map(str, only))}]"] if only else []
        args = [*args_with(tmp_path, 0, 2), "--sweep.records", records, *extra]
        args[args.index("--run.dir") + 1] = str(tmp_path / folder)
        return semisup(load(None, args))["results"]

    late = part("a", 1)
    assert calls == ["none-seed0-40pct-set1"] and [r["setting"] for r in late] == [1]
    assert not (tmp_path / "a" / "finetune" / "none-seed0-40pct-set0").exists()
    calls.clear()
    early = part("b", 0)
    assert calls == ["none-seed0-40pct-set0"] and [r["setting"] for r in early] == [0]
    calls.clear()
    whole = part("c")  # every setting: each found in the records, none run again
    assert calls == [] and [r["setting"] for r in whole] == [0, 1]
    assert [r["test"] for r in whole] == [early[0]["test"], late[0]["test"]]


@pytest.mark.parametrize("only", ["[2]", "[0, 0]", "[]", "[true]", "0"])
def test_only_settings_outside_the_grid_is_refused_before_anything_is_written(tmp_path, calls, only):
    with pytest.raises(ConfigError, match=r"only_settings"):
        semisup(load(None, [*args_with(tmp_path, 0, 2), "--sweep.only_settings", only]))
    assert calls == [] and not (tmp_path / "sweep").exists()


def test_only_settings_none_of_which_is_tried_for_a_start_is_refused_before_it_pre_trains(tmp_path, calls):
    # setting 1 is for the Hebbian start alone: the random start would have no cell at all
    args = args_with(tmp_path, 0, 2)
    i = args.index("--sweep.settings")
    args[i + 1] = "[" + SETTINGS[0] + ", {finetune: {lr: 3.0e-3}, methods: [softhebb]}]"
    with pytest.raises(ConfigError, match=r"only_settings \[1\].*\['none'\].*pre-train and run nothing"):
        semisup(load(None, [*args, "--sweep.only_settings", "[1]"]))
    assert calls == [] and not (tmp_path / "sweep").exists()
    # a setting tried for it, or a protocol without settings (the probe), gives it cells again
    load(None, [*args, "--sweep.only_settings", "[0, 1]"])
    args[args.index("--sweep.protocols") + 1] = "[linear, finetune]"
    load(None, [*args, "--sweep.only_settings", "[1]"])


def tuned_args(tmp_path, *keep, seeds="[1, 0]", tune="[0]"):
    args = args_with(tmp_path, *keep)
    args[args.index("--sweep.seeds") + 1] = seeds
    return [*args, "--sweep.tune_seeds", tune]


def test_tune_seeds_run_the_grid_first_and_the_other_seeds_run_the_setting_chosen_on_them(tmp_path, calls):
    # seed 0 (the tuning seed) runs first, every setting; seed 1 only the best on seed 0's validation
    results = semisup(load(None, tuned_args(tmp_path, 0, 2)))["results"]
    tuning = [r for r in results if r["seed"] == 0]
    best = max(tuning, key=lambda r: r["val"]["top1"])  # of equals, the first setting
    chosen = f"none-seed1-40pct-set{best['setting']}"
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set1", chosen]
    assert [(r["seed"], r["setting"]) for r in results] == [(0, 0), (0, 1), (1, best["setting"])]


def test_a_setting_that_diverged_on_the_tuning_seed_is_never_run_on_the_others(tmp_path, calls):
    # setting 0 diverges on seed 0, so seed 1 runs setting 1, whatever the validation scores say
    results = semisup(load(None, tuned_args(tmp_path, 1, 0)))["results"]
    assert calls == ["none-seed0-40pct-set0", "none-seed0-40pct-set1", "none-seed1-40pct-set1"]
    assert "diverged" in results[0] and [r["setting"] for r in results] == [0, 1, 1]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--sweep.tune_seeds", "[2]"], "tune_seeds.*of sweep.seeds"),
        (["--sweep.tune_seeds", "[]"], "tune_seeds.*non-empty"),
        (["--sweep.tune_seeds", "[0]", "--sweep.only_settings", "[1]"], "tune_seeds.*only_settings"),
        (["--sweep.tune_seeds", "[0]", "--sweep.settings", "[]"], "tune_seeds.*sweep.settings"),
    ],
)
def test_tune_seeds_outside_the_sweep_are_refused_before_anything_is_written(tmp_path, calls, extra, match):
    args = [*args_with(tmp_path, 0, 2), *extra]
    args[args.index("--sweep.seeds") + 1] = "[0, 1]"
    with pytest.raises(ConfigError, match=match):
        semisup(load(None, args))
    assert calls == [] and not (tmp_path / "sweep").exists()


def test_tune_seeds_choose_on_the_records_of_earlier_parts(tmp_path, calls):
    # seed 0's settings ran as two parts (only_settings, on the tuning seed alone, with the
    # configuration's tune_seeds kept); the tuned sweep reads them from the records,
    # runs none of them again and runs seed 1 at the setting their validation scores choose
    records = str(tmp_path / "committed.json")
    parts = {}
    for k in (1, 0):
        args = [
            *tuned_args(tmp_path, 0, 2, seeds="[0]"),
            "--sweep.records",
            records,
            "--sweep.only_settings",
            f"[{k}]",
        ]
        args[args.index("--run.dir") + 1] = str(tmp_path / f"part{k}")
        calls.clear()
        parts[k] = semisup(load(None, args))["results"][0]
        assert calls == [f"none-seed0-40pct-set{k}"]  # the listed setting alone
    best = max((parts[0], parts[1]), key=lambda r: r["val"]["top1"])
    calls.clear()
    args = [*tuned_args(tmp_path, 0, 2), "--sweep.records", records]
    results = semisup(load(None, args))["results"]
    assert calls == [f"none-seed1-40pct-set{best['setting']}"]
    assert [r["test"] for r in results[:2]] == [parts[0]["test"], parts[1]["test"]]


def starts_args(tmp_path, grid, *extra):
    args = [*args_with(tmp_path, 0), *extra]
    args[args.index("--sweep.settings") + 1] = grid
    args[args.index("--sweep.methods") + 1] = "[softhebb, none]"
    return args


LONG_FOR_NONE = (
    "[{finetune: {lr: 1.0e-3}}, {finetune: {lr: 2.0e-3}, methods: [none]}, {finetune: {lr: 3.0e-3}}]"
)


def test_a_setting_named_for_some_starts_runs_for_those_only(tmp_path, calls):
    # setting 1 is tried for the random start alone: the SoftHebb start runs settings 0 and 2 under
    # their own indices, its grid counts as complete without setting 1, and setting 1 is never chosen
    # for it; with tune_seeds, seed 1 runs each start's choice among the settings it tried
    args = starts_args(tmp_path, LONG_FOR_NONE, "--sweep.tune_seeds", "[0]")
    args[args.index("--sweep.seeds") + 1] = "[0, 1]"
    results = semisup(load(None, args))["results"]
    seed0 = [c for c in calls if "-seed0-" in c]
    assert seed0 == [
        "softhebb-seed0-40pct-set0", "softhebb-seed0-40pct-set2",
        "none-seed0-40pct-set0", "none-seed0-40pct-set1", "none-seed0-40pct-set2",
    ]  # fmt: skip
    for method, tried in (("softhebb", {0, 2}), ("none", {0, 1, 2})):
        ran = {r["setting"]: r for r in results if r["method"] == method and r["seed"] == 0}
        assert set(ran) == tried
        best = max(sorted(ran), key=lambda k: ran[k]["val"]["top1"])  # of equals, the first
        assert [r["setting"] for r in results if r["method"] == method and r["seed"] == 1] == [best]
        assert f"{method}-seed1-40pct-set{best}" in calls
    assert len(calls) == 7
    assert "incomplete" not in (tmp_path / "sweep" / "table.md").read_text()


@pytest.mark.parametrize("starts", ["[]", "[bogus]", "[none, none]", "none", "[1]"])
def test_starts_that_are_not_methods_are_refused_before_anything_is_written(tmp_path, calls, starts):
    grid = f"[{{finetune: {{lr: 1.0e-3}}}}, {{finetune: {{lr: 2.0e-3}}, methods: {starts}}}]"
    with pytest.raises(ConfigError, match=r"sweep\.settings\[1\]\.methods"):
        semisup(load(None, starts_args(tmp_path, grid)))
    assert calls == [] and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    "grid",
    [
        "[{finetune: {lr: 2.0e-3}}, {finetune: {lr: 2.0e-3}, methods: [none]}]",
        "[{finetune: {lr: 2.0e-3}, methods: [none]}, {finetune: {lr: 2.0e-3}, methods: [softhebb]}]",
    ],
)
def test_a_setting_repeated_for_other_starts_is_refused(tmp_path, calls, grid):
    with pytest.raises(ConfigError, match=r"sweep\.settings\[1\] repeats sweep\.settings\[0\]"):
        semisup(load(None, starts_args(tmp_path, grid)))
    assert calls == [] and not (tmp_path / "sweep").exists()
