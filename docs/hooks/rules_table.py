"""The table of registered rules, generated from :data:`hebbopt.rules.RULES` (never a hand list).

As an MkDocs hook it replaces ``<!-- rules-table -->`` on any page with the table. README.md holds the
same table between ``<!-- rules-table:begin -->`` and ``<!-- rules-table:end -->``: run
``python docs/hooks/rules_table.py`` to rewrite it after adding a rule (tests/test_rule_names.py checks
that it is current).
"""

from __future__ import annotations

import pathlib
import re

MARK = "<!-- rules-table -->"
BEGIN, END = "<!-- rules-table:begin -->", "<!-- rules-table:end -->"
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def table() -> str:
    """The markdown table: one row per registered rule (name, summary, hyper-parameters, state)."""
    from hebbopt.rules import RULES

    rows = ["| `rule=` | what it is | hyper-parameters (default) |", "|---|---|---|"]
    for name, rule in RULES.items():
        hyper = ", ".join(f"`{k}` ({h.default!r})" for k, h in rule.hyper.items()) or "–"
        rows.append(f"| `{name}` | {rule.summary} | {hyper.replace('|', '∣')} |")
    return "\n".join(rows) + "\n"


def _block(text: str) -> re.Match:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    if match is None:
        raise ValueError(f"README.md has no {BEGIN} ... {END} block")
    return match


def readme_block(text: str) -> str:
    """What README.md holds between the markers."""
    return _block(text).group(1)


def with_table(text: str) -> str:
    """``text`` (README.md) with the block between the markers replaced by :func:`table`."""
    match = _block(text)
    return text[: match.start(1)] + table() + text[match.end(1) :]


def on_page_markdown(markdown: str, **kwargs) -> str:
    return markdown.replace(MARK, table())


if __name__ == "__main__":
    README.write_text(with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"{README}: rules table rewritten")
