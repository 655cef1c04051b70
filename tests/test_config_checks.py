"""Every setting is checked before a run folder exists or data is read (issue 13): rule
hyper-parameters and layer patterns, through each recipe script, end with exit status 2 naming the
key and what is allowed."""

import re

import pytest
from test_recipes import TINY

import hebbopt.training.setup as training_setup
from hebbopt.cli import finetune_main, pretrain_main, semisup_main, vae_main
from hebbopt.training import ConfigError, load, precision
from hebbopt.training.models import check_layer_patterns

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
    monkeypatch.setattr(training_setup, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
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
    check_layer_patterns(cfg)  # the layers exist
    check_layer_patterns(load(None, TINY))  # no patterns: nothing to check
    other = load(None, [*TINY, "--model.name", "softhebb_3l", "--model.kwargs", "{}",
                        "--pretrain.exclude", "[features.0]"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"features\.0"):
        check_layer_patterns(other)


# --- the command line (jsonargparse): today's interface ----------------------------------------


def test_help_lists_every_key_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        finetune_main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--config", "--resume", "--backbone"):
        assert option in out
    for section, values in load(None, []).to_dict().items():
        for key, value in values.items():
            default = re.escape("null" if value is None else str(value))
            assert re.search(rf"--{section}\.{key}\b[^(]*\(type: [^)]*default: {default}\)", out)


def test_file_then_overrides_with_yaml_values(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text("finetune:\n  regime: 5\n  lr: 1e-2\nmodel:\n  kwargs: {width: 0.25}\nrun:\n")
    cfg = load(file, ["--finetune.regime", "7", "--probe.knn_k", "[1, 5]", "--model.kwargs={width: 0.5}",
                      "--sweep.seeds=[0,1]", "--data.root", "null", "--pretrain.compile", "false"],
               )  # fmt: skip
    assert cfg.finetune.regime == 7.0 and cfg.finetune.lr == 0.01 and cfg.probe.knn_k == [1, 5]
    assert cfg.model.kwargs == {"width": 0.5} and cfg.sweep.seeds == [0, 1] and cfg.data.root is None
    assert cfg.pretrain.compile is False and cfg.run.dir == "runs/default"
    assert load(None, ["--pretrain.rule_kwargs", "{hpca: {}}"]).pretrain.rule_kwargs == {"hpca": {}}
    assert load(None, ["--model.kwargs", "{width:0.5}"]).model.kwargs == {"width:0.5": None}  # named later


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--finetune.epochs", "two"], "finetune.epochs must be int, got two"),
        (["--finetune.epochs", "null"], "finetune.epochs must be int, got None"),
        (["--pretrain.exclude", "features.0"], "pretrain.exclude must be list or null, got features.0"),
        (["--probe.knn_k", "x"], "probe.knn_k must be int or list, got x"),
        (
            ["--finetune.regimes", "5"],
            r"unknown config key finetune.regimes: valid keys are \['augment', 'bal",
        ),
        (["--fine.epochs", "5"], r"unknown config section 'fine': choose one of \['data'"),
        (["epochs"], "override 'epochs': use --section.key value"),
        (["--run.progress", "1"], "run.progress must be bool, got 1"),
    ],
)
def test_bad_words_name_the_key_and_what_it_takes(words, message):
    with pytest.raises(ConfigError, match=message):
        load(None, words)


def test_bad_config_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.yaml")
    for text, message in [("finetune:\n  regimes: 5\n", "unknown config key finetune.regimes"),
                          ("- a\n", "maps sections"), ("finetune: {regime: [\n", "config")]:  # fmt: skip
        (tmp_path / "c.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load(tmp_path / "c.yaml")


CHOICES = {
    "pretrain.schedule": ("all", "layerwise"),
    "pretrain.statistics_dtype": ("float32", "bfloat16"),
    "finetune.optimizer": ("sgd", "adamw"),
    "finetune.schedule": ("step", "cosine"),
    "finetune.head_norm": ("none", "l2"),
    "probe.normalize": ("none", "standardize", "l2"),
    "probe.features": ("pre_logits", "map"),
    "run.mixed_precision": ("no", "bf16", "fp16", "auto"),
}


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_each_choice_is_its_fields_type_and_a_wrong_one_is_named_everywhere(key, tmp_path):
    """The choices are declared on the field (``Literal``) and checked by the parser: from the command
    line, a file and ``sweep.settings``/``replace`` alike, the message names the key and the choices."""
    section, name = key.split(".")
    choices = CHOICES[key]
    message = re.escape(f"{key} must be one of {', '.join(choices)}, got 'bogus'")
    with pytest.raises(ConfigError, match=message):
        load(None, [f"--{key}", "bogus"])
    path = tmp_path / "bad.yaml"
    path.write_text(f"{section}:\n  {name}: bogus\n")
    with pytest.raises(ConfigError, match=message):
        load(path)
    with pytest.raises(ConfigError, match=message):
        load(None).replace(**{section: {name: "bogus"}})
    for choice in choices:
        expected = precision.resolve(choice, cpu=False) if key == "run.mixed_precision" else choice
        assert getattr(getattr(load(None, [f"--{key}", choice]), section), name) == expected


def test_the_configuration_imports_nothing_that_runs():
    """The configuration (config.py, its sections and checks) sits below every training module: it
    imports none of them but each other and the precision choice (a leaf), nor evaluation, sweeps."""
    import ast
    import pathlib

    import hebbopt.training.config as config

    family = {"hebbopt.training.config", "hebbopt.training.sections", "hebbopt.training.config_checks"}
    allowed = family | {"hebbopt.training.precision"}
    for name in family:
        path = pathlib.Path(config.__file__).with_name(name.rpartition(".")[2] + ".py")
        tree = ast.parse(path.read_text())
        imported = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module:
                imported |= {
                    f"{n.module}.{a.name}" if n.module == "hebbopt.training" else n.module for a in n.names
                }
            elif isinstance(n, ast.Import):
                imported |= {a.name for a in n.names}
        below = {
            m for m in imported if m.startswith(("hebbopt.training", "hebbopt.evaluation", "hebbopt.sweeps"))
        }
        assert below <= allowed, (name, below - allowed)
