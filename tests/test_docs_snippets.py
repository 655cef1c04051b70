"""The documentation's code cannot rot: every ```python block of these pages runs, in order.

Each page's blocks run in one namespace (later blocks use what earlier ones defined), in a fresh
temporary directory, on the CPU. Blocks in other languages (bash, text, yaml) are not run. The
pages keep their examples tiny (a few small batches, ``compile`` left at ``"auto"`` = eager on
the CPU), so this takes seconds.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import sys
import textwrap

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Pages whose examples are executed (recipes.md and benchmarks.md hold commands, not snippets).
# adding-a-rule.md edits the package itself: tests/test_adding_a_rule.py follows it in a copy.
PAGES = ["index.md", "using.md", "rules.md", "models.md"]

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """``(language, code, line)`` of every fenced block (also inside admonitions/tabs)."""
    blocks = []
    for m in FENCE.finditer(text):
        language = m["info"].split()[0] if m["info"].strip() else ""
        line = text.count("\n", 0, m.start()) + 1
        blocks.append((language, textwrap.dedent(m["body"]), line))
    return blocks


def _reset_accelerate() -> None:
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def test_fence_parser():
    text = (
        "a\n```python\nx = 1\n```\n\n"
        "!!! note\n    ```bash\n    ls\n    ```\n    ```py title='t'\n    y = 2\n    ```\n"
    )
    assert code_blocks(text) == [("python", "x = 1\n", 2), ("bash", "ls\n", 7), ("py", "y = 2\n", 10)]


@pytest.mark.parametrize("page", PAGES)
def test_page_snippets_run(page, tmp_path, monkeypatch):
    text = (DOCS / page).read_text(encoding="utf-8")
    blocks = [(code, line) for lang, code, line in code_blocks(text) if lang in ("python", "py")]
    assert blocks, f"{page} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    _reset_accelerate()  # the "using" page creates an Accelerator (a process-wide singleton)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    # One thread: the snippets are tiny, and on a busy machine OpenMP threads that wait for a
    # core make small matrix products ~25× slower.
    torch.set_num_threads(1)
    try:
        for code, line in blocks:
            source = compile(code, f"{page}:{line}", "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(source, namespace)  # the documentation's own examples
    finally:
        _reset_accelerate()
        torch.set_num_threads(threads)
        for value in namespace.values():
            close = getattr(value, "close", None)
            if isinstance(value, torch.optim.Optimizer) and callable(close):
                close()
    assert os.getcwd() == str(tmp_path)


def test_describe_output_on_the_quickstart_matches():
    """The ```text block after ``print(hebb.describe())`` on the quickstart is what it prints."""
    import timm

    import hebbopt

    text = (DOCS / "index.md").read_text(encoding="utf-8")
    shown = next(code for lang, code, _ in code_blocks(text) if lang == "text" and code.startswith("layer"))
    model = timm.create_model("hebb_alexnet_6l", num_classes=10)
    with hebbopt.HPCAHebb(model) as hebb:
        assert hebb.describe().strip() == shown.strip()


def test_quickstart_shows_the_readme_commands_and_ci_runs_the_test_command():
    """README's "two commands" appear verbatim on the quickstart; .ci/run runs the test one, whose
    docs build fails on any warning (``--strict``, and no ``-q`` to hide the warnings)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    commands = [ln for ln in section.splitlines() if ln.startswith("python3 -m venv")]
    assert len(commands) == 2, commands
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    shown = {ln for lang, code, _ in code_blocks(text) if lang == "bash" for ln in code.splitlines()}
    for command in commands:
        assert command in shown, f"README command not on docs/index.md: {command}"
    test_command = next(c for c in commands if "pytest" in c)
    build = re.search(r"mkdocs build[^&]*", test_command).group(0).split()
    assert "--strict" in build, test_command
    assert not {"-q", "--quiet"} & set(build), "-q drops the warnings that --strict would count"
    assert "ruff check ." in test_command and "ruff format --check ." in test_command, test_command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines(), ".ci/run does not run the README's test command"
