"""The API reference is complete: every public name is rendered and fully documented.

Docstrings are read the way mkdocstrings reads them (griffe, Google style). The public names of a
documented module are those in its ``__all__`` where it defines one (re-exported names included,
checked where they are defined), else every name without a leading underscore; each such function
and class, and each public method of such a class, has a docstring whose ``Args`` name every
parameter, with ``Returns`` when something is returned and ``Raises`` naming every exception the
body raises itself. Every documented module appears in a ``:::`` block of ``docs/api/``.
"""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap

import pytest

griffe = pytest.importorskip("griffe")

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Modules of the API reference (docs/api/*.md); add a module here when adding its ::: block.
MODULES = [
    "hebbopt",
    "hebbopt.optimizer",
    "hebbopt.named",
    "hebbopt.functional",
    "hebbopt.copies",
    "hebbopt.rules",
    "hebbopt.rules.base",
    "hebbopt.rules.swta",
    "hebbopt.rules.hpca",
    "hebbopt.rules.softhebb",
    "hebbopt.rules.krotov",
    "hebbopt.rules.oja",
    "hebbopt.rules.bcm",
    "hebbopt.rules.geometry",
    "hebbopt.testing",
    "hebbopt.capture",
    "hebbopt.layers",
    "hebbopt.checks",
    "hebbopt.selection",
    "hebbopt.compiling",
    "hebbopt.distributed",
    "hebbopt.weights",
    "hebbopt.filters",
    "hebbopt.files",
    "hebbopt.models.alexnet",
    "hebbopt.models.vgg",
    "hebbopt.models.flat_head",
    "hebbopt.models.cfgs",
    "hebbopt.models.softhebb",
    "hebbopt.models.features",
    "hebbopt.data.datasets",
    "hebbopt.data.regimes",
    "hebbopt.data.seeds",
    "hebbopt.training.config",
    "hebbopt.training.sections",
    "hebbopt.training.config_checks",
    "hebbopt.training.loop",
    "hebbopt.training.pretrain",
    "hebbopt.training.finetune",
    "hebbopt.training.vae",
    "hebbopt.sweeps",
    "hebbopt.sweeps.semisup",
    "hebbopt.sweeps.grid",
    "hebbopt.sweeps.records",
    "hebbopt.evaluation",
    "hebbopt.evaluation.features",
    "hebbopt.evaluation.linear",
    "hebbopt.evaluation.neighbours",
    "hebbopt.evaluation.report",
    "hebbopt.training.tracking",
    "hebbopt.training.setup",
    "hebbopt.training.precision",
    "hebbopt.training.models",
    "hebbopt.training.batches",
    "hebbopt.training.augment",
    "hebbopt.training.sgd",
    "hebbopt.training.checkpoints",
    "hebbopt.training.run_folder",
    "hebbopt.training.metric_checks",
    "hebbopt.training.folder_lock",
    "hebbopt.sweeps.settings",
    "hebbopt.cli",
]

# Documented where the class is (its Args); ``forward`` is nn.Module's, documented by torch.
SKIP_METHODS = {"__init__", "forward"}


@pytest.fixture(scope="module")
def package():
    return griffe.load("hebbopt", search_paths=[str(ROOT / "src")], docstring_parser="google")


def _public(module):
    """The functions and classes the module promises (see the module docstring), and their methods."""
    if module.exports is None:
        members = [m for n, m in module.members.items() if not n.startswith("_") and not m.is_alias]
    else:
        members = [module.members[str(n)] for n in module.exports if str(n) in module.members]
        members = [m.final_target if m.is_alias else m for m in members]
    for member in members:
        if member.is_function or member.is_class:
            yield member
            if member.is_class:
                for mname, method in member.members.items():
                    if method.is_function and not mname.startswith("_") and mname not in SKIP_METHODS:
                        yield method


def _sections(obj):
    return {s.kind.value: s for s in obj.docstring.parse("google")} if obj.docstring else {}


def _raised(func) -> set[str]:
    """Exception names raised directly in the function body (not in nested functions)."""
    source = textwrap.dedent("\n".join(func.lines)) if func.lines else ""
    if not source:
        return set()
    tree = ast.parse(source).body[0]
    names = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name):
                names.add(exc.id)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _problems(obj) -> list[str]:
    if not obj.docstring or not obj.docstring.value.strip():
        return ["no docstring"]
    sections = _sections(obj)
    problems = []
    func = obj.members.get("__init__") if obj.is_class else obj
    if func is not None and func.is_function:
        wanted = [
            p.name
            for p in func.parameters
            if p.name not in ("self", "cls")
            and p.kind.value not in ("variadic positional", "variadic keyword")
        ]
        documented = {p.name for p in sections["parameters"].value} if "parameters" in sections else set()
        missing = [n for n in wanted if n not in documented]
        if missing:
            problems.append(f"Args missing {missing}")
        if obj.is_function:
            returns = obj.returns
            text = str(returns) if returns is not None else ""
            is_property = "property" in obj.labels
            if text and text != "None" and not is_property and "returns" not in sections:
                problems.append(f"no Returns section (returns {text})")
        raised = _raised(func)
        listed = set()
        if "raises" in sections:
            listed = {str(r.annotation) for r in sections["raises"].value}
        missing_raises = sorted(raised - listed - {"NotImplementedError"})
        if missing_raises:
            problems.append(f"Raises missing {missing_raises}")
    return problems


def _check(mod) -> list[str]:
    if not mod.docstring or not mod.docstring.value.strip():
        return [f"{mod.path}: no module docstring"]
    unknown = [str(n) for n in mod.exports or () if str(n) not in mod.members]
    problems = [f"{mod.path}.__all__ names {n!r}, which the module does not define" for n in unknown]
    problems += [f"{obj.path}: {'; '.join(p)}" for obj in _public(mod) if (p := _problems(obj))]
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_public_names_fully_documented(package, module):
    mod = package if module == "hebbopt" else package[module.removeprefix("hebbopt.")]
    problems = _check(mod)
    assert not problems, "\n".join(problems)


def test_all_decides_what_is_checked(tmp_path):
    """With ``__all__``, an undocumented exported function fails and an unlisted helper is free;
    without it, every public-looking name is checked."""
    pkg = tmp_path / "toy"
    pkg.mkdir()
    helpers = "def helper(x):\n    return x\n\n\ndef _private(x):\n    return x\n"
    api = (
        'def api(x: int) -> int:\n    """Twice ``x``.\n\n    Returns:\n        2x.\n    """\n'
        "    if x < 0:\n        raise ValueError(x)\n    return 2 * x\n"
    )
    (pkg / "__init__.py").write_text('"""Toy."""\n')
    (pkg / "listed.py").write_text(f'"""Listed."""\n\n__all__ = ["api", "gone"]\n\n\n{api}\n\n{helpers}')
    (pkg / "unlisted.py").write_text(f'"""Unlisted."""\n\n\n{helpers}')
    toy = griffe.load("toy", search_paths=[str(tmp_path)], docstring_parser="google")
    listed = "\n".join(_check(toy["listed"]))
    assert "toy.listed.api: Args missing ['x']; Raises missing ['ValueError']" in listed
    assert "'gone', which the module does not define" in listed
    assert "helper" not in listed and "_private" not in listed
    assert _check(toy["unlisted"]) == ["toy.unlisted.helper: no docstring"]


def test_every_module_is_in_the_reference():
    """A module missing here has no page, so a cross-reference to it renders as literal text."""
    modules = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
        # A package's __init__ re-exports its modules' names; those are rendered where defined.
        if parts[-1] != "__init__" and not any(p.startswith("_") for p in parts):
            modules.append(".".join(parts))
    missing = [m for m in modules if m not in MODULES]
    assert not missing, f"modules not in MODULES (add a ::: block to docs/api/ and list them): {missing}"


def test_every_documented_module_and_export_is_rendered():
    blocks = set()
    for page in (ROOT / "docs" / "api").glob("*.md"):
        blocks |= set(re.findall(r"^::: ([\w.]+)", page.read_text(), flags=re.M))
    import hebbopt

    # hebbopt.optimizer's public names are rendered as hebbopt.SoftWTAHebb etc.
    missing = [m for m in MODULES if m not in blocks and m != "hebbopt.optimizer"]
    assert not missing, f"modules without a ::: block in docs/api/: {missing}"
    exports = [n for n in hebbopt.__all__ if n != "models"]
    # RULES (a dict) is documented with its module, hebbopt.rules.
    where = {"RULES": "hebbopt.rules"}
    unrendered = [
        n
        for n in exports
        if f"hebbopt.{n}" not in blocks
        and where.get(n, getattr(getattr(hebbopt, n), "__module__", None)) not in blocks
    ]
    assert not unrendered, f"exports of hebbopt without a ::: block in docs/api/: {unrendered}"
