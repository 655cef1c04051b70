"""docs/adding-a-rule.md works as written: a user who follows it trains with their new rule.

The page's own code blocks are read from the markdown (editing the page's code edits this test), for
both walkthroughs, the stateless rule (sections 2, 3) and the rule with state (section 5): into a
copy of the package, the rule file is written as ``rules/<name>.py``, the registry diff (one line)
is applied to ``rules/__init__.py`` (each ``-`` line must be there, once), and the usage snippet
runs in a fresh interpreter that imports that copy, followed by a check that the new rule is exact
against its own reference over two steps, state included; the edited files pass ruff.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

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


# The two walkthroughs: a stateless rule (sections 2 and 3) and a rule with state (section 5).
WALKTHROUGHS = {"stateless": ("2. ", "3. "), "stateful": ("5. ", "5. ")}


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS)
def test_the_page_trains_a_new_rule(tmp_path, walkthrough):
    file_section, registry_section = WALKTHROUGHS[walkthrough]
    (rule_lang, rule_code), *rest = _blocks(file_section)
    assert rule_lang == "python"
    name = re.search(r'^    name="(\w+)",$', rule_code, flags=re.M).group(1)
    registry, usage = rest if file_section == registry_section else _blocks(registry_section)
    assert registry[0] == "diff" and usage[0] == "python"

    package = tmp_path / "hebbopt"
    shutil.copytree(ROOT / "src" / "hebbopt", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "rules" / f"{name}.py").write_text(rule_code, encoding="utf-8")
    _apply(registry[1], package / "rules" / "__init__.py")
    assert registry[1].count("\n+") == 1, "the registry edit is one line"

    # After the page's snippet: the copy was imported, the rule is the new one, every layer took 3
    # steps; then the new rule is exact against its own reference over two steps, state included.
    check = f"""
assert pathlib.Path(hebbopt.__file__).parent == pathlib.Path({str(package)!r})
rule = hebbopt.rules.RULES[{name!r}]
assert rule is hebbopt.rules.{name}.RULE and opt.rule is rule
steps = [s.get("step") for s in opt.state.values()]
assert steps and all(s == 3 for s in steps), steps

layer = torch.nn.Conv2d(2, 4, 3, stride=2, padding=1).double()
exact = hebbopt.HebbianOptimizer([layer], rule, lr=0.5, compile=False)
state = rule.initial_state(layer.weight.detach())
for _ in range(2):
    x = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    delta, state = rule.reference_step(layer, x, state, **rule.defaults())
    w0 = layer.weight.detach().clone()
    layer(x)
    exact.step()
    assert torch.allclose(layer.weight.detach() - w0, 0.5 * delta, rtol=1e-10, atol=1e-12)
    got = exact.state[layer.weight].get("rule_state", {{}})
    assert got.keys() == state.keys() and all(torch.allclose(got[k], state[k], rtol=1e-10) for k in state)
"""
    script = usage[1] + "\nimport pathlib\nimport torch\n" + check
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
