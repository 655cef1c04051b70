"""Run folders and configurations that can be trusted (issue 20, items 1-5 and 10-13): a folder is
held by one run at a time, a finished run is never half cleaned up, weight files and input
identities do not depend on the process, sweep cells are checked before they are reported, and
bad settings end with exit status 2 and one line, before any folder is made."""

import importlib
import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from test_recipes import TINY, interrupt_after_first_checkpoint, tiny

import hebbopt.training.setup as training_setup
from hebbopt.cli import finetune_main, pretrain_main, semisup_main
from hebbopt.files import CorruptFileError
from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, finetune, load, pretrain
from hebbopt.training import run_folder as run_folder_module
from hebbopt.weights import read_weights, save_weights, weights_digest

semisup_module = importlib.import_module("hebbopt.sweeps.semisup")  # the package exports a function
SWEEP = ["--sweep.methods", "[none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]",
         "--sweep.protocols", "[knn]"]  # fmt: skip


def exit_code(main, argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's error exit
        return e.code


def write_lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "kind": "pretrain", "since": "earlier"}
    (folder / "run.lock").write_text(json.dumps(holder))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def killed_finetune(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, "--finetune.epochs", "2")
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg)
    return cfg


# --- 1. one run per folder ---------------------------------------------------------------------


def test_a_folder_held_by_a_live_run_is_refused_with_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_setup, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = tmp_path / "run"
        write_lock(run, holder.pid)
        argv = [*TINY, "--run.dir", str(run), "--pretrain.method", "swta"]
        assert exit_code(pretrain_main, argv) == 2
        err = capsys.readouterr().err
        assert str(run) in err and f"pid {holder.pid}" in err and socket.gethostname() in err
        assert sorted(p.name for p in run.iterdir()) == ["run.lock"]  # nothing else written
        write_lock(run, os.getpid(), host="elsewhere.example")  # alive or not: it cannot be checked
        assert exit_code(pretrain_main, argv) == 2
        err = capsys.readouterr().err
        assert str(run) in err and "elsewhere.example" in err
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_by_a_process_whose_pid_is_not_visible_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    write_lock(run, dead_pid())  # as a process of another pid namespace (container) looks from here
    code = (
        "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
        "print(1, flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(run / "run.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"1"  # it holds the lock
        assert exit_code(pretrain_main, [*TINY, "--run.dir", str(run), "--pretrain.method", "swta"]) == 2
        assert "in use by another run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert exit_code(pretrain_main, [*TINY, "--run.dir", str(run), "--pretrain.method", "swta"]) == 0


def test_resume_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, monkeypatch, capsys):
    killed_finetune(tmp_path, monkeypatch)
    run = tmp_path / "run"
    argv = [*TINY, "--finetune.epochs", "2", "--run.dir", str(run), "--resume"]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_lock(run, holder.pid)
        assert exit_code(finetune_main, argv) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
        assert (run / "checkpoint.pt").exists()  # untouched
    finally:
        holder.kill()
        holder.wait()
    gone = dead_pid()
    write_lock(run, gone)
    assert exit_code(finetune_main, argv) == 0
    out = capsys.readouterr().out
    assert f"pid {gone}" in out and "taking it over" in out
    assert not (run / "run.lock").exists()  # released at the end
    assert json.loads((run / "metrics.json").read_text())["done"]


def test_the_lock_is_held_while_running_and_released_after_an_error(tmp_path, monkeypatch, capsys):
    seen = []

    def full_disk(path, state):
        seen.append(json.loads((path.parent / "run.lock").read_text()))
        raise OSError(28, f"disk full (no space left on the device) while writing {path}")

    monkeypatch.setattr(run_folder_module, "save_checkpoint", full_disk)
    run = tmp_path / "run"
    argv = [*TINY, "--run.dir", str(run), "--pretrain.method", "swta"]
    assert exit_code(pretrain_main, argv) == 1
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (run / "run.lock").exists()
    monkeypatch.undo()
    assert exit_code(pretrain_main, [*argv, "--resume"]) == 0
    assert not (run / "run.lock").exists()


def test_a_sweep_holds_its_folder_and_each_sub_run_its_own(tmp_path, monkeypatch, capsys):
    held = []
    real = semisup_module.knn

    def knn(*args, **kwargs):
        held.append(sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("run.lock")))
        return real(*args, **kwargs)

    monkeypatch.setattr(semisup_module, "knn", knn)
    assert semisup_main([*TINY, *SWEEP, "--run.dir", str(tmp_path / "run")]) == 0
    assert held[0] == ["run/knn/none-seed0-50pct/run.lock", "run/run.lock"]
    assert not list(tmp_path.rglob("run.lock"))


# --- 2. a kill between the final metrics and the checkpoint's removal ----------------------------


def finish_then_die(self, metrics, message):
    self.metrics(metrics)
    raise KeyboardInterrupt("killed before the checkpoint was removed")


def killed_after_its_metrics(tmp_path, monkeypatch):
    """A fine-tuning run killed between writing its final metrics and deleting its checkpoint."""
    cfg = tiny(tmp_path, "--finetune.epochs", "1")
    with monkeypatch.context() as m:
        m.setattr(run_folder_module.Run, "finish", finish_then_die)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg)
    return cfg


def test_a_finished_run_with_a_leftover_checkpoint_is_cleaned_up(tmp_path, monkeypatch, capsys):
    killed_after_its_metrics(tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert (run / "checkpoint.pt").exists() and json.loads((run / "metrics.json").read_text())["done"]
    capsys.readouterr()
    argv = [*TINY, "--finetune.epochs", "1", "--run.dir", str(run)]
    assert exit_code(finetune_main, argv) == 2  # without --resume: refused, but cleaned up
    assert "already complete" in capsys.readouterr().err
    assert not (run / "checkpoint.pt").exists()
    with monkeypatch.context() as m:
        m.setattr(run_folder_module.Run, "finish", finish_then_die)
        with pytest.raises(KeyboardInterrupt):
            pretrain(tiny(tmp_path, "--run.dir", str(tmp_path / "pre"), "--pretrain.method", "swta"))
    assert (tmp_path / "pre" / "checkpoint.pt").exists()
    pre = [*TINY, "--run.dir", str(tmp_path / "pre"), "--pretrain.method", "swta", "--resume"]
    assert exit_code(pretrain_main, pre) == 0
    assert "already complete" in capsys.readouterr().out
    assert not (tmp_path / "pre" / "checkpoint.pt").exists()


def test_done_is_a_query_and_finished_tidies(tmp_path, monkeypatch):
    from accelerate import Accelerator

    cfg = killed_after_its_metrics(tmp_path, monkeypatch)
    leftover = tmp_path / "run" / "checkpoint.pt"
    files = {p: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file() and p.name != "run.lock"}
    run = run_folder_module.Run(cfg, Accelerator(cpu=True), resume=True, kind="finetune")
    metrics = run.done()
    assert metrics["done"] and leftover.exists()
    assert {p: p.read_bytes() for p in files} == files  # nothing written or deleted
    assert run.finished() == metrics and not leftover.exists()


# --- 3, 4. weight files and input identities that do not depend on the process -----------------


def test_weight_files_are_byte_identical(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    files = [save_weights(model, tmp_path / f"w{i}.safetensors").read_bytes() for i in range(24)]
    assert all(f == files[0] for f in files)  # the metadata's order is not the process's hash order
    state = read_weights(tmp_path / "w0.safetensors")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    a = pretrain(tiny(tmp_path, "--run.dir", str(tmp_path / "a"), "--pretrain.method", "swta"))
    b = pretrain(tiny(tmp_path, "--run.dir", str(tmp_path / "b"), "--pretrain.method", "swta"))
    assert a.read_bytes() == b.read_bytes()


def test_a_backbone_written_again_with_the_same_weights_is_the_same_input(tmp_path, monkeypatch):
    backbone = pretrain(tiny(tmp_path, "--run.dir", str(tmp_path / "pre"), "--pretrain.method", "swta"))
    cfg = tiny(tmp_path, "--finetune.epochs", "2")
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg, backbone=backbone)
    # the same tensors serialised in another order (as another process, or an older hebbopt, writes them)
    state, first = read_weights(backbone), backbone.read_bytes()
    metadata = {"sha256": weights_digest(state), "format": "pt"}
    for _ in range(64):
        save_file(state, str(backbone), metadata=metadata)
        if backbone.read_bytes() != first:
            break
    assert backbone.read_bytes() != first
    assert finetune(cfg, backbone=backbone, resume=True)["done"]
    # other weights are another input
    cfg = tiny(tmp_path, "--finetune.epochs", "2", "--run.dir", str(tmp_path / "ft2"))
    with monkeypatch.context() as m:
        interrupt_after_first_checkpoint(m)
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg, backbone=backbone)
    key = next(iter(state))
    state[key] = state[key] + 1
    save_file(state, str(backbone), metadata={"sha256": weights_digest(state), "format": "pt"})
    with pytest.raises(ConfigError, match="different input files: backbone"):
        finetune(cfg, backbone=backbone, resume=True)


# --- 5. sweep cells are checked and tied to their run -------------------------------------------


def edit(file, change):
    metrics = json.loads(file.read_text())
    change(metrics)
    file.write_text(json.dumps(metrics))


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["test"].update(top1=math.nan),
        lambda m: m["test"].update(top1=700.0),
        lambda m: m["test"].update(top1=7.0),  # plausible, but not what the run wrote
        lambda m: m.pop("sha256"),
        lambda m: m.update(labelled=-3),
    ],
    ids=["nan", "700pct", "plausible", "no-checksum", "negative-count"],
)
def test_a_sweep_refuses_an_edited_cell(tmp_path, change):
    cfg = tiny(tmp_path, *SWEEP)
    first = semisup(cfg)["results"][0]["test"]["top1"]
    cell = tmp_path / "run" / "knn" / "none-seed0-50pct" / "metrics.json"
    good = cell.read_text()
    edit(cell, change)
    with pytest.raises(CorruptFileError, match=str(cell)):
        semisup(cfg, resume=True)
    results = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    assert results[0]["test"]["top1"] == first  # the bad value reached no summary
    cell.write_text(good)
    assert semisup(cfg, resume=True)["results"][0]["test"]["top1"] == first


def test_a_run_finished_before_checksums_is_range_checked_and_sealed_once(tmp_path):
    cfg = tiny(tmp_path, *SWEEP)
    first = semisup(cfg)["results"][0]["test"]["top1"]
    folder = tmp_path / "run" / "knn" / "none-seed0-50pct"
    record = json.loads((folder / "run.json").read_text())
    assert record.pop("format") == run_folder_module.FORMAT
    (folder / "run.json").write_text(json.dumps(record))  # as an older hebbopt wrote them
    edit(folder / "metrics.json", lambda m: m.pop("sha256"))
    legacy = (folder / "metrics.json").read_text()
    assert semisup(cfg, resume=True)["results"][0]["test"]["top1"] == first
    assert "sha256" in json.loads((folder / "metrics.json").read_text())  # sealed now
    assert json.loads((folder / "run.json").read_text())["format"] == run_folder_module.FORMAT
    edit(folder / "metrics.json", lambda m: m.pop("sha256"))  # sealed folders need their checksum
    with pytest.raises(CorruptFileError, match="no checksum"):
        semisup(cfg, resume=True)
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "metrics.json").write_text(legacy)
    edit(folder / "metrics.json", lambda m: m["test"].update(top1=700.0))  # old, but impossible
    with pytest.raises(CorruptFileError, match=str(folder / "metrics.json")):
        semisup(cfg, resume=True)


def test_a_cell_copied_from_another_run_or_an_edited_summary_is_refused(tmp_path):
    cfg = tiny(tmp_path, *SWEEP, "--sweep.regimes", "[50, 100]")
    semisup(cfg)
    cells = tmp_path / "run" / "knn"
    half, full = cells / "none-seed0-50pct" / "metrics.json", cells / "none-seed0-100pct" / "metrics.json"
    good = half.read_text()
    half.write_text(full.read_text())  # a genuine record, of another run
    with pytest.raises(CorruptFileError, match=str(half)):
        semisup(cfg, resume=True)
    half.write_text(good)
    summary = tmp_path / "run" / "results.json"
    results = json.loads(summary.read_text())
    results["results"][1]["test"]["top1"] = 700.0
    summary.write_text(json.dumps(results))
    with pytest.raises(CorruptFileError, match=str(summary)):
        semisup(cfg, resume=True)


def test_a_finished_finetune_run_with_edited_metrics_is_refused(tmp_path):
    cfg = tiny(tmp_path, "--finetune.epochs", "1")
    finetune(cfg)
    metrics = tmp_path / "run" / "metrics.json"
    edit(metrics, lambda m: m["test"].update(top5=100.5))
    with pytest.raises(CorruptFileError, match=str(metrics)):
        finetune(cfg, resume=True)


# --- 10-13. configuration ------------------------------------------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("(--help")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--run.se", "3"], r"unknown config key run\.se"),
        (["--run.seed", "3", "--resu"], r"unknown option --resu\b"),
        (["--conf", "x.yaml"], r"unknown option --conf\b"),
    ],
)
def test_abbreviated_options_are_refused(tmp_path, capsys, words, message):
    import re

    assert exit_code(pretrain_main, [*TINY, "--run.dir", str(tmp_path / "run"), *words]) == 2
    assert re.search(message, one_line_error(capsys))
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"run\.se"):
        load(None, ["--run.se", "3"])


def test_duplicate_yaml_keys_are_refused_naming_key_and_file(tmp_path, capsys):
    file = tmp_path / "c.yaml"
    file.write_text("finetune:\n  epochs: 3\n  lr: 0.1\n  epochs: 4\n")
    assert exit_code(finetune_main, [*TINY, "--config", str(file), "--run.dir", str(tmp_path / "run")]) == 2
    line = one_line_error(capsys)
    assert str(file) in line and "finetune.epochs" in line and "line 4" in line
    assert not (tmp_path / "run").exists()
    file.write_text("run:\n  seed: 1\nrun:\n  seed: 2\n")
    with pytest.raises(ConfigError, match=rf"{file}.*key run\b"):
        load(file)
    file.write_text("sweep:\n  settings:\n    - finetune: {lr: 0.1, lr: 0.2}\n")
    with pytest.raises(ConfigError, match=r"sweep\.settings\[0\]\.finetune\.lr"):
        load(file)
    with pytest.raises(ConfigError, match=r"finetune\.epochs"):
        load(None, ["--finetune", "{epochs: 3, epochs: 4}"])
    assert load(None, ["--finetune", "{epochs: 3, lr: 0.5}"]).finetune.epochs == 3  # no false alarm


@pytest.mark.parametrize("text", ["finetune: 5\n", "finetune: [1, 2]\n", "run: fast\n"])
def test_a_section_given_a_scalar_exits_2_with_one_line(tmp_path, capsys, text):
    file = tmp_path / "c.yaml"
    file.write_text(text)
    section = text.split(":")[0]
    argv = [*TINY, "--config", str(file), "--run.dir", str(tmp_path / "run")]
    assert exit_code(pretrain_main, argv) == 2
    line = one_line_error(capsys)
    assert str(file) in line and section in line and "mapping" in line
    assert not (tmp_path / "run").exists()
    assert exit_code(pretrain_main, [*TINY, "--run.dir", str(tmp_path / "run"), f"--{section}", "5"]) == 2
    line = one_line_error(capsys)
    assert section in line and "mapping" in line
    with pytest.raises(ConfigError, match="mapping"):
        load(file)


@pytest.mark.parametrize("key", ["seeds", "methods", "regimes"])
def test_an_empty_sweep_list_exits_2(tmp_path, monkeypatch, capsys, key):
    monkeypatch.setattr(training_setup, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    argv = [*TINY, *SWEEP, "--run.dir", str(tmp_path / "run"), f"--sweep.{key}", "[]"]
    assert exit_code(semisup_main, argv) == 2
    assert f"sweep.{key}" in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("job", "breaks", "args"),
    [("finetune", "finetune_run", ("--finetune.epochs", "1")), ("pretrain", "hebbian_optimizer", ())],
)
def test_a_run_that_fails_from_python_releases_its_folder(tmp_path, monkeypatch, job, breaks, args):
    cfg = tiny(tmp_path, "--pretrain.method", "swta", *args)
    monkeypatch.setattr(sys.modules[f"hebbopt.training.{job}"], breaks, lambda *a, **k: 1 / 0)
    try:
        {"finetune": finetune, "pretrain": pretrain}[job](cfg)
    except ZeroDivisionError:  # the traceback keeps the run's frame alive: only an explicit release frees it
        assert not (tmp_path / "run" / run_folder_module.LOCK).exists()
    else:
        pytest.fail(f"{job} did not raise")
