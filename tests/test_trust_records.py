"""What a record says of how it was computed (the precision), and how an interrupted command ends."""

import json
import sys

from test_finetune_protocols import TINY

from hebbopt.cli import semisup_main
from hebbopt.sweeps import semisup
from hebbopt.training import load

SWEEP = ["--sweep.methods", "[none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
         "--sweep.protocols", "[linear]"]  # fmt: skip


def _reset_accelerate() -> None:  # the precision is process-wide state of accelerate
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_the_precision_is_part_of_every_record(tmp_path):
    for precision in ("no", "bf16"):
        _reset_accelerate()
        root = tmp_path / precision
        cfg = load(None, [*TINY, *SWEEP, "--run.dir", str(root), "--run.mixed_precision", precision])
        (record,) = semisup(cfg)["results"]
        assert record["precision"] == precision
        assert json.loads((root / "results.json").read_text())["results"][0]["precision"] == precision
        assert json.loads((root / "run.json").read_text())["precision"] == precision
        assert json.loads((root / "linear" / "none-seed0-40pct" / "run.json").read_text())["precision"] == (
            precision
        )
        assert f"- precision (run.mixed_precision): {precision}" in (root / "table.md").read_text()
    _reset_accelerate()


def test_ctrl_c_ends_with_one_line_saying_how_to_resume(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["hebbopt.sweeps.semisup"], "semisup", interrupted)
    assert semisup_main([*TINY, *SWEEP, "--run.dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume" in err[0] and "Traceback" not in err[0]


def test_negative_numbers_after_a_space_and_non_finite_rates_get_the_value_message():
    import pytest

    from hebbopt.training import ConfigError

    for args, message in [
        (["--finetune.lpft_lr", "-1e-4"], r"finetune.lpft_lr must be a finite number > 0.*got -0.0001"),
        (["--finetune.lr", "-.5"], r"finetune.lr must be a finite number > 0, got -0.5"),
        (["--finetune.lr", ".inf"], r"finetune.lr must be a finite number > 0, got inf"),
        (["--finetune.lpft_lr", ".inf"], r"finetune.lpft_lr must be a finite number > 0"),
        (["--probe.lr", ".inf"], r"probe.lr"),
        (["--pretrain.lr", ".nan"], r"pretrain.lr must be a finite number > 0"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(None, args)
    assert load(None, ["--data.val_size", "7", "--finetune.weight_decay", "0"]).data.val_size == 7


def test_settings_errors_name_the_setting_and_the_key():
    import pytest

    from hebbopt.training import ConfigError

    for settings, message in [
        ("[{finetune: {lr: null}}]", r"sweep.settings\[0\]: finetune.lr must be float.*got None"),
        (
            "[{finetune: {lr: 1.0e-3}}, {finetune: {lr: .inf}}]",
            r"sweep.settings\[1\]: finetune.lr must be a finite",
        ),
        ("[{finetune: {lr: abc}}]", r"sweep.settings\[0\]: finetune.lr must be float"),
        ("[{finetune: {epochs: 2.5}}]", r"sweep.settings\[0\]: finetune.epochs must be int"),
        ("[{probe: {lr: -1.0}}]", r"sweep.settings\[0\]: probe.epochs must be >= 0, .*probe.lr a finite"),
        (
            "[{finetune: {lr: 1.0e-3}}, {finetune: {lr: 1.0e-3}}]",
            r"sweep.settings\[1\] repeats sweep.settings\[0\]",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            load(None, ["--sweep.settings", settings])
    with pytest.raises(ConfigError, match=r"lpft: probe\.epochs must be >= 1"):
        load(None, ["--sweep.protocols", "[lpft]", "--probe.epochs", "0", "--finetune.lpft_epochs", "3"])
    assert load(None, ["--sweep.settings", "[{finetune: {lr: 2}}, {finetune: {lr: 1.0e-3, steps: 30}}]"])


def test_a_finished_folder_survives_an_upgrade_that_adds_config_keys(tmp_path):
    import hashlib

    import yaml

    from hebbopt.training import finetune
    from hebbopt.training.run_folder import _canonical

    cfg = load(None, [*TINY, "--run.dir", str(tmp_path / "run"), "--finetune.regime", "40"])
    first = finetune(cfg)
    folder = tmp_path / "run"
    # as an earlier hebbopt wrote it: its Config had no sweep.records, run.checkpoint_every, finetune.steps
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    for section, key in [("sweep", "records"), ("run", "checkpoint_every"), ("finetune", "steps")]:
        del saved[section][key]
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.pop("sha256")
    seal = hashlib.sha256(_canonical(saved) + b"\0" + _canonical(metrics)).hexdigest()
    (folder / "metrics.json").write_text(json.dumps({**metrics, "sha256": seal}))
    again = finetune(cfg, resume=True)  # finished: read back, not refused as "edited"
    assert again["test"] == first["test"]


def test_one_resume_rule_for_the_command_line_and_the_library(tmp_path, capsys):
    import pytest

    from hebbopt.training import ConfigError, pretrain

    sweep = [*TINY, "--sweep.methods", "[softhebb]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
             "--sweep.protocols", "[linear]"]  # fmt: skip
    root = tmp_path / "sweep"
    pretrain(load(None, [*TINY, "--run.dir", str(root / "pretrain" / "softhebb-seed0")]))  # made first
    # without --resume: refused, and nothing written (the root holds only the pre-training)
    assert semisup_main([*sweep, "--run.dir", str(root)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["pretrain"]
    with pytest.raises(ConfigError, match="pass --resume"):
        semisup(load(None, [*sweep, "--run.dir", str(root)]))
    assert sorted(p.name for p in root.iterdir()) == ["pretrain"]
    # with --resume: the command line continues it, as the library does
    assert semisup_main([*sweep, "--run.dir", str(root), "--resume"]) == 0
    assert (root / "results.json").exists()
    # a folder that does not exist is refused by both
    with pytest.raises(SystemExit):
        semisup_main([*sweep, "--run.dir", str(tmp_path / "nowhere"), "--resume"])
    with pytest.raises(ConfigError, match="does not exist"):
        semisup(load(None, [*sweep, "--run.dir", str(tmp_path / "nowhere")]), resume=True)
    assert not (tmp_path / "nowhere").exists()


def test_the_nan_message_speaks_only_of_checkpoints_that_exist(tmp_path):
    import pytest

    from hebbopt.training import finetune

    args = [*TINY, "--finetune.regime", "40", "--finetune.optimizer", "sgd", "--finetune.lr", "1e30"]
    # it diverges in epoch 2: with a checkpoint after epoch 1 it is kept, without one none is claimed
    with pytest.raises(FloatingPointError, match=r"epoch 2: .* its last checkpoint kept"):
        finetune(load(None, [*args, "--run.dir", str(tmp_path / "a")]))
    with pytest.raises(FloatingPointError, match=r"epoch 2: .* no checkpoint was written yet"):
        finetune(load(None, [*args, "--run.dir", str(tmp_path / "b"), "--run.checkpoint_every", "5"]))
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_a_sweep_says_probe_settings_do_not_tune_the_linear_protocol(tmp_path):
    args = [*TINY, "--sweep.methods", "[none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
            "--sweep.protocols", "[linear]", "--run.dir", str(tmp_path / "sweep"),
            "--sweep.settings", "[{probe: {lr: 1.0e-3}}, {probe: {lr: 3.0e-3}}]"]  # fmt: skip
    (record,) = semisup(load(None, args))["results"]  # linear: once
    assert "setting" not in record
    assert "the linear protocol runs once per regime" in (tmp_path / "sweep" / "log.txt").read_text()
