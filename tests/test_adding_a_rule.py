"""docs/adding-a-rule.md works as written: a user who follows it trains with their new rule.

The page's own code blocks are read from the markdown (editing the page's code edits this test):
into a copy of the package, the rule file of step 2 is written as ``rules/<name>.py``, the diff of
step 3 is applied to ``rules/__init__.py`` (each ``-`` line must be there, once), and the usage
snippet of step 3 runs in a fresh interpreter that imports that copy; the edited files pass ruff.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "adding-a-rule.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def _blocks(section: str) -> list[tuple[str, str]]:
    """The fenced code blocks ``(language, code)`` of the page's ``## <section>...`` section."""
    parts = re.split(r"^## ", PAGE.read_text(encoding="utf-8"), flags=re.M)
    matching = [p for p in parts if p.startswith(section)]
    assert len(matching) == 1, f"{PAGE.name}: no single section '## {section}'"
    return FENCE.findall(matching[0])


def _apply(diff: str, path: pathlib.Path) -> None:
    """Replace each ``-`` line of ``diff`` with the ``+`` line after it, as a user edits the file."""
    lines = [line for line in diff.splitlines() if line[:1] in "-+"]
    removed, added = lines[0::2], lines[1::2]
    assert all(r.startswith("-") for r in removed) and all(a.startswith("+") for a in added), diff
    assert len(removed) == len(added), diff
    text = path.read_text(encoding="utf-8")
    for old, new in zip(removed, added, strict=True):
        old_line, new_line = old[1:] + "\n", new[1:] + "\n"
        assert text.count(old_line) == 1, f"the page says to edit {old[1:]!r}, not found once in {path.name}"
        text = text.replace(old_line, new_line)
    path.write_text(text, encoding="utf-8")


def test_the_page_trains_a_new_rule(tmp_path):
    (rule_lang, rule_code), *_ = _blocks("2. ")
    assert rule_lang == "python"
    name = re.search(r'^    name="(\w+)",$', rule_code, flags=re.M).group(1)
    registry, usage = _blocks("3. ")
    assert registry[0] == "diff" and usage[0] == "python"

    package = tmp_path / "hebbopt"
    shutil.copytree(ROOT / "src" / "hebbopt", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "rules" / f"{name}.py").write_text(rule_code, encoding="utf-8")
    _apply(registry[1], package / "rules" / "__init__.py")

    # After the page's snippet: the copy was imported, the rule is the new one, every layer took 3 steps.
    check = f"""
assert pathlib.Path(hebbopt.__file__).parent == pathlib.Path({str(package)!r})
assert hebbopt.rules.RULES[{name!r}] is hebbopt.rules.{name}.RULE
assert opt.rule is hebbopt.rules.RULES[{name!r}]
steps = [s.get("step") for s in opt.state.values()]
assert steps and all(s == 3 for s in steps), steps
"""
    script = usage[1] + "\nimport pathlib\n" + check
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # The edited files pass the project's lint, as CI will check them.
    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is not None:
        files = [package / "rules" / f"{name}.py", package / "rules" / "__init__.py"]
        lint = subprocess.run(
            [ruff, "check", "--config", str(ROOT / "pyproject.toml"), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
