"""Committed records (sweep.records): a sweep resumed into an empty folder skips the cells the file
holds, never mixes a record with another pre-training, and reruns only what is missing or changed."""

import json
import sys

import pytest
from test_finetune_protocols import TINY

from hebbopt.files import CorruptFileError
from hebbopt.sweeps import semisup
from hebbopt.sweeps.records import Records
from hebbopt.training import load

SWEEP = ["--sweep.methods", "[softhebb, none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
         "--sweep.protocols", "[linear, finetune]"]  # fmt: skip


def _spy(monkeypatch):
    calls = []
    semisup_module = sys.modules["hebbopt.sweeps.semisup"]
    for name in ("pretrain", "finetune", "_probe"):
        real = getattr(semisup_module, name)

        def spy(cfg, *args, real=real, name=name, **kwargs):
            calls.append((name, cfg.pretrain.method))
            return real(cfg, *args, **kwargs)

        monkeypatch.setattr(semisup_module, name, spy)
        for protocol, runner in semisup_module.RUNNERS.items():  # the sweep dispatches through its table
            if runner is real:
                monkeypatch.setitem(semisup_module.RUNNERS, protocol, spy)
    return calls


def _sweep(tmp_path, folder, records, *extra):
    return semisup(load(None, [*TINY, *SWEEP, "--run.dir", str(tmp_path / folder),
                               "--sweep.records", str(records), *extra]))  # fmt: skip


def _key(r):
    return (r["method"], r["protocol"])


def test_an_empty_folder_skips_every_committed_cell_and_its_pretraining(tmp_path, monkeypatch):
    records = tmp_path / "committed" / "results.json"
    first = _sweep(tmp_path, "a", records)["results"]
    saved = json.loads(records.read_text())["results"]
    assert [_key(r) for r in saved] == [_key(r) for r in first] and len(saved) == 4
    assert {r["backbone_sha256"] is None for r in saved if r["method"] == "none"} == {True}
    assert all(isinstance(r["backbone_sha256"], str) for r in saved if r["method"] == "softhebb")
    calls = _spy(monkeypatch)
    again = _sweep(tmp_path, "b", records)["results"]  # another machine: nothing of "a" is there
    assert calls == []
    assert [(r["test"], r.get("val")) for r in again] == [(r["test"], r.get("val")) for r in first]
    assert (tmp_path / "b" / "table.md").read_text() == (tmp_path / "a" / "table.md").read_text()


def test_only_missing_cells_of_the_same_backbone_run_again(tmp_path, monkeypatch):
    records = tmp_path / "committed" / "results.json"
    first = _sweep(tmp_path, "a", records)["results"]
    saved = json.loads(records.read_text())
    # the Hebbian probe's record is lost: its pre-training runs again (the same weights, on the CPU)
    saved["results"] = [r for r in saved["results"] if _key(r) != ("softhebb", "linear")]
    records.write_text(json.dumps(saved))
    calls = _spy(monkeypatch)
    again = _sweep(tmp_path, "b", records)["results"]
    assert calls == [("pretrain", "softhebb"), ("_probe", "softhebb")]  # the random start: all held
    assert [r["test"] for r in again] == [r["test"] for r in first]
    # a record of another pre-training is never mixed in: it runs again
    saved = json.loads(records.read_text())
    for r in saved["results"]:
        if _key(r) == ("softhebb", "finetune"):
            r["backbone_sha256"] = "0" * 64
    saved["results"] = [r for r in saved["results"] if _key(r) != ("softhebb", "linear")]
    records.write_text(json.dumps(saved))
    calls.clear()
    _sweep(tmp_path, "c", records)
    assert ("finetune", "softhebb") in calls and ("_probe", "softhebb") in calls
    assert not [c for c in calls if c[1] == "none" and c[0] != "pretrain"]


def test_a_changed_setting_is_a_new_cell(tmp_path, monkeypatch):
    records = tmp_path / "committed" / "results.json"
    _sweep(tmp_path, "a", records)
    calls = _spy(monkeypatch)
    _sweep(tmp_path, "b", records, "--finetune.lr", "0.002")
    assert sorted(c for c in calls if c[0] == "finetune") == [("finetune", "none"), ("finetune", "softhebb")]
    # the digest covers whole sections: the probe cells, whose configuration changed too, run again
    assert ("_probe", "softhebb") in calls and ("_probe", "none") in calls


def test_a_title_names_the_dataset_and_is_not_part_of_a_cell(tmp_path, monkeypatch):
    records = tmp_path / "committed" / "results.json"
    _sweep(tmp_path, "a", records)
    assert json.loads(records.read_text())["dataset"] == "synthetic"  # data.name by default
    calls = _spy(monkeypatch)
    again = _sweep(tmp_path, "b", records, "--data.title", "my images")
    assert calls == []  # every cell found: the title changes no result
    assert again["dataset"] == "my images"
    assert json.loads((tmp_path / "b" / "results.json").read_text())["dataset"] == "my images"
    assert "my images" in (tmp_path / "b" / "table.md").read_text()


def test_worker_processes_are_not_part_of_a_cell_and_a_resume_may_change_them(tmp_path, monkeypatch):
    records = tmp_path / "committed" / "results.json"
    first = _sweep(tmp_path, "a", records)["results"]
    calls = _spy(monkeypatch)
    again = _sweep(tmp_path, "b", records, "--data.workers", "2")["results"]
    assert calls == []  # every cell found: worker processes only decode images
    assert [r["test"] for r in again] == [r["test"] for r in first]
    args = [*TINY, *SWEEP, "--run.dir", str(tmp_path / "a"), "--sweep.records", str(records)]
    resumed = semisup(load(None, [*args, "--data.workers", "1"]), resume=True)["results"]
    assert calls == [] and [r["test"] for r in resumed] == [r["test"] for r in first]
    with pytest.raises(ValueError, match=r"data\.img_size"):  # a key that changes the result is refused
        semisup(load(None, [*args, "--data.img_size", "16"]), resume=True)


def test_a_grid_reuses_the_plain_sweeps_cells_under_its_own_setting_index(tmp_path, monkeypatch):
    # A settings grid added to a committed config: its setting equal to the plain config reuses those
    # records (the same cells), reported as that setting, wherever it sits in the grid.
    records = tmp_path / "committed" / "results.json"
    plain = _sweep(tmp_path, "a", records)["results"]
    calls = _spy(monkeypatch)
    grid = "[{finetune: {lr: 0.002}}, {finetune: {lr: 0.001}}]"  # 0.001: TINY's lr (the default)
    again = _sweep(tmp_path, "b", records, "--finetune.lr", "0.001", "--sweep.settings", grid)["results"]
    assert sorted(c for c in calls if c[0] == "finetune") == [("finetune", "none"), ("finetune", "softhebb")]
    assert ("_probe", "softhebb") not in calls and ("_probe", "none") not in calls
    tuned = {(r["method"], r["setting"]): r for r in again if r["protocol"] == "finetune"}
    assert sorted(tuned) == [("none", 0), ("none", 1), ("softhebb", 0), ("softhebb", 1)]
    for r in plain:
        if r["protocol"] == "finetune":
            assert tuned[r["method"], 1]["test"] == r["test"] and "setting" not in r


def test_two_sweeps_sharing_the_file_keep_each_others_cells(tmp_path):
    # Each reads the file before the other writes (two terminals; a checkout updated under a sweep):
    # a finished cell joins what the file holds when it is written, never a copy taken earlier.
    path = tmp_path / "committed" / "results.json"
    cfgs = [load(None, [*TINY, "--run.seed", str(seed)]) for seed in range(3)]
    a, b = (Records(path, main=True, dataset="synthetic", metric="top1") for _ in range(2))
    ra = a.add(cfgs[0], "linear", {"seed": 0, "test": {"top1": 40.0}}, None)
    rb = b.add(cfgs[1], "linear", {"seed": 1, "test": {"top1": 41.0}}, None)
    assert json.loads(path.read_text())["results"] == [ra, rb]
    # what a sweep reuses is what it read and ran (alike on every process of a run)
    assert b.find(cfgs[0], "linear", None) is None and b.find(cfgs[1], "linear", None) == rb
    # a record taken out of the file by hand stays out; a cell run again replaces its record
    path.write_text(json.dumps({"dataset": "synthetic", "metric": "top1", "results": [rb]}))
    rc = a.add(cfgs[2], "linear", {"seed": 2, "test": {"top1": 42.0}}, None)
    rb2 = a.add(cfgs[1], "linear", {"seed": 1, "test": {"top1": 43.0}}, None)
    assert json.loads(path.read_text())["results"] == [rc, rb2]
    # a file damaged since it was read is not written over
    path.write_text('{"results": [')
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        b.add(cfgs[0], "linear", {"seed": 0, "test": {"top1": 44.0}}, None)
    assert path.read_text() == '{"results": ['


@pytest.mark.parametrize(
    "name", ["imagenette_softhebb_3l", "cifar10_vgg_softhebb", "imagenette_vgg_softhebb"]
)
def test_the_committed_records_match_their_cells_under_the_current_config(tmp_path, monkeypatch, name):
    # A key added to Config (at the value that computes what was computed before it), or a settings
    # grid added to a committed config, must not orphan the records it already holds: each would be
    # recomputed for hours.
    import pathlib

    from hebbopt.sweeps.records import cell_digest
    from hebbopt.sweeps.semisup import TUNED_PROTOCOLS, _cells, _with
    from hebbopt.training.config_checks import setting_overrides

    root = pathlib.Path(__file__).resolve().parents[1]
    monkeypatch.setenv("HEBBOPT_DATA", str(tmp_path))  # the digest reads the root as written
    for folder in ("imagenette128", "cifar10"):  # what the data checks look for: a class folder
        for split in ("train", "val"):
            (tmp_path / folder / split / "n01440764").mkdir(parents=True)
    digests = set()
    # A cell's digest leaves out the sweep section, so the cells are built from a pre-training
    # configuration without the grid: each check of a configuration that carries the grid checks
    # every setting again (hundreds of cells here). That the digest is the same is checked on one cell.
    lean = {"settings": [], "only_settings": None, "tune_seeds": None}
    # run.mixed_precision: auto, on each kind of machine the records were computed on: with bf16
    # units (bf16) and without (fp32)
    for units in (True, False):
        monkeypatch.setattr("hebbopt.training.precision.bf16_units", lambda device_type, units=units: units)
        cfg = load(str(root / f"recipes/configs/{name}.yaml"), [])
        assert cfg.run.mixed_precision == ("bf16" if units else "no")
        grid = [cfg.replace(**setting_overrides(s)) for s in cfg.sweep.settings] or [cfg]
        indices = list(range(len(grid)))
        for seed in cfg.sweep.seeds:
            for method in cfg.sweep.methods:
                pre = {"pretrain": {"method": method}, "run": {"seed": seed, "dir": str(tmp_path / "p")}}
                cells = _cells(cfg, grid, cfg.replace(sweep=lean, **pre), tmp_path, indices)
                if not digests:  # the last cell, a tuned one where the config has a grid
                    protocol, regime, k, folder, sub = cells[-1]
                    setting = grid[k] if protocol in TUNED_PROTOCOLS else cfg
                    whole = _with(setting, cfg.replace(**pre), regime, tmp_path / protocol / folder)
                    assert whole.sweep.settings == cfg.sweep.settings and sub.sweep.settings == []
                    assert cell_digest(whole, protocol) == cell_digest(sub, protocol)
                for protocol, *_, sub in cells:
                    digests.add(cell_digest(sub, protocol))
    committed = json.loads((root / cfg.sweep.records).read_text())["results"]
    assert committed and all(r["cell"] in digests for r in committed)
