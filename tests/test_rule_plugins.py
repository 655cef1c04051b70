"""A rule from outside the package: ``hebbopt.rules.register`` and the ``hebbopt.rules`` entry-point
group of an installed package (a dist-info written into a temporary folder on ``sys.path``), seen
by ``RULES``, the configuration and the recipes, and checked by ``hebbopt.testing.check_rule``."""

import dataclasses
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

import hebbopt.testing
from hebbopt.rules import RULES, register
from hebbopt.training import ConfigError, load

ROOT = pathlib.Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A user's package: Oja's rule under its own name, with its own reference (no edit of hebbopt)."""
import dataclasses

from hebbopt.rules import oja

RULE = dataclasses.replace(oja.RULE, name="plugin_oja", summary="Oja's rule, from a plugin")
'''


def _install(tmp_path: pathlib.Path, entry: str) -> pathlib.Path:
    site = tmp_path / "site"
    (site / "my_rules").mkdir(parents=True)
    (site / "my_rules" / "__init__.py").write_text(PLUGIN)
    dist = site / "my_rules-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rules\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[hebbopt.rules]\n{entry}\n")
    return site


def _run(site: pathlib.Path, code: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src"), str(ROOT / "tests")])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def test_an_installed_packages_rule_is_registered_checked_and_pretrains(tmp_path):
    site = _install(tmp_path, "plugin_oja = my_rules:RULE")
    run = _run(
        site,
        f"""
        import json, hebbopt, hebbopt.testing
        from hebbopt.rules import RULES
        from hebbopt.cli import pretrain_main
        from test_recipes import TINY
        assert "plugin_oja" in RULES and RULES["plugin_oja"].summary == "Oja's rule, from a plugin"
        hebbopt.testing.check_rule("plugin_oja", compile=False)
        code = pretrain_main([*TINY, "--model.name", "hebb_alexnet_6l", "--pretrain.method", "plugin_oja",
                              "--run.dir", {str(tmp_path / "run")!r}])
        assert code in (0, None), code
        metrics = json.load(open({str(tmp_path / "run" / "metrics.json")!r}))
        print("METHOD", metrics.get("method", "?"), "HISTORY", len(metrics["history"]))
    """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "HISTORY 1" in run.stdout, run.stdout


def test_a_broken_entry_point_warns_and_hebbopt_still_imports(tmp_path):
    site = _install(tmp_path, "wrong_name = my_rules:RULE")
    run = _run(
        site,
        """
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import hebbopt
        from hebbopt.rules import RULES
        assert "plugin_oja" not in RULES and "wrong_name" not in RULES
        print([str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])
    """,
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "entry point wrong_name = my_rules:RULE (group hebbopt.rules): not registered" in run.stdout
    assert "the rule is named 'plugin_oja'" in run.stdout


def test_register_in_process_reaches_the_configuration():
    rule = dataclasses.replace(RULES["oja"], name="registered_oja")
    with pytest.raises(ConfigError, match="unknown method 'registered_oja'"):
        load(None, ["--pretrain.method", "registered_oja", "--data.name", "synthetic"])
    try:
        assert register(rule) is rule and register(rule) is rule  # idempotent
        assert load(None, ["--pretrain.method", "registered_oja", "--data.name", "synthetic"])
        hebbopt.testing.check_accumulation(rule)
    finally:
        RULES.pop("registered_oja", None)
    with pytest.raises(ValueError, match=r"taken by hebbopt\.rules\.oja\.statistics"):
        register(dataclasses.replace(RULES["oja"], summary="another oja"))
    for name, message in [("none", "not a rule"), ("my-rule", "letters, digits and underscores")]:
        with pytest.raises(ValueError, match=message):
            register(dataclasses.replace(RULES["oja"], name=name))
    with pytest.raises(TypeError, match=r"takes a hebbopt\.rules\.Rule"):
        register("oja")
