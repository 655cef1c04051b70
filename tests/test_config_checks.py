"""Every setting is checked before a run folder exists or data is read (issue 13): rule
hyper-parameters and layer patterns, through each recipe script, end with exit status 2 naming the
key and what is allowed."""

import re

import pytest
from test_recipes import TINY

import hebbopt.training.common as common
from hebbopt.training import ConfigError, load
from hebbopt.training.cli import finetune_main, pretrain_main, semisup_main, vae_main

SCRIPTS = {"pretrain": pretrain_main, "finetune": finetune_main, "semisup": semisup_main, "vae": vae_main}


def exit_code(main, argv) -> int:
    """The exit status of a recipe's main, whether it returns it or exits (argparse's error)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


BAD = [
    (
        ["--pretrain.rule_kwargs", "{swta: {similarity: bogus}}"],
        r"pretrain\.rule_kwargs\.swta: invalid similarity .*'bogus'.*raised_cos2.*dot",
    ),
    (
        ["--pretrain.exclude", "[nope.*]"],
        r"pretrain\.exclude.*'nope\.\*' matches no .*its layers are: features\.0",
    ),
    (["--pretrain.include", "[features.0, nope]"], r"pretrain\.include.*'nope' matches no"),
    (["--pretrain.exclude", '["*"]'], r"pretrain\.exclude.*nothing to train"),
    (["--pretrain.exclude", "features.0"], r"pretrain\.exclude.*list"),
]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(("override", "message"), BAD)
def test_bad_rule_kwargs_and_layer_patterns_exit_2_before_a_run_folder(
    tmp_path, monkeypatch, capsys, script, override, message
):
    monkeypatch.setattr(common, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    code = exit_code(SCRIPTS[script], [*TINY, "--run.dir", str(tmp_path / "run"), *override])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_bad_layer_patterns_with_resume_exit_2(tmp_path, capsys, script):
    argv = [*TINY, "--run.dir", str(tmp_path / "run"), "--pretrain.include", "[nope]", "--resume"]
    assert exit_code(SCRIPTS[script], argv) == 2
    assert "'nope' matches no" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_layer_patterns_of_the_model_pass(tmp_path):
    cfg = load(None, [*TINY, "--pretrain.include", "[features.*]", "--pretrain.exclude", "[features.0]"])
    common.check_layer_patterns(cfg)  # the layers exist
    common.check_layer_patterns(load(None, TINY))  # no patterns: nothing to check
    other = load(None, [*TINY, "--model.name", "softhebb_3l", "--model.kwargs", "{}",
                        "--pretrain.exclude", "[features.0]"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"features\.0"):
        common.check_layer_patterns(other)
