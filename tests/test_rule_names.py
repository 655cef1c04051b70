"""Rule names live in one place, hebbopt.rules.RULES: the README's table, the docs' table and the
configuration's choices and --help derive from it (issue 21, item 5)."""

import importlib.util
import pathlib

import pytest

from hebbopt.rules import RULES
from hebbopt.training.config import make_parser, methods

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rules_table", ROOT / "docs" / "hooks" / "rules_table.py")
rules_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rules_table)


def test_the_readme_table_is_the_generated_one():
    block = rules_table.readme_block((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block == rules_table.table(), "README's rules table is stale: run python docs/hooks/rules_table.py"
    for name in RULES:
        assert f"| `{name}` |" in block


def test_the_table_follows_the_registry(monkeypatch):
    import hebbopt.rules

    rule = next(iter(RULES.values()))
    monkeypatch.setitem(hebbopt.rules.RULES, "mine", rule)
    assert "| `mine` |" in rules_table.table()
    assert rules_table.on_page_markdown(f"a\n{rules_table.MARK}\nb") == f"a\n{rules_table.table()}\nb"


def test_the_docs_pages_use_the_generated_table():
    assert rules_table.MARK in (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert "docs/hooks/rules_table.py" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")


def test_config_choices_and_help_list_every_rule(capsys):
    assert set(RULES) <= set(methods())
    with pytest.raises(SystemExit):
        make_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # --help wraps lines
    listed = text.split("pretrain.method and sweep.methods take:")[1].split("(")[0]
    assert [n.strip() for n in listed.split(",")] == list(methods())
