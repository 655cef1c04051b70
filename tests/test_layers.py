"""The package's layers import only downwards: the core (optimizer, rules, models, data) imports none
of the recipes; the training engine and the evaluation protocols import neither each other nor the
sweeps; the sweeps import no command line. Function-level imports count too."""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

LAYERS = {"core": 0, "hebbopt.training": 1, "hebbopt.evaluation": 1, "hebbopt.sweeps": 2, "hebbopt.cli": 3}


def _module(path: pathlib.Path, src: pathlib.Path) -> str:
    parts = path.relative_to(src).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    for name in ("hebbopt.training", "hebbopt.evaluation", "hebbopt.sweeps", "hebbopt.cli"):
        if module == name or module.startswith(name + "."):
            return name
    return "core"


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hebbopt"):
            # ``from hebbopt.training import precision``: the module named is hebbopt.training.precision
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("hebbopt")}
    return found


def _wrong(src: pathlib.Path) -> list[str]:
    wrong = []
    for path in sorted(src.rglob("*.py")):
        here = _layer(_module(path, src))
        for target in sorted(_imports(path)):  # a set: its order changes from process to process
            there = _layer(target)
            if there != here and LAYERS[there] >= LAYERS[here]:  # upwards, or sideways between peers
                wrong.append(f"{_module(path, src)} imports {target}")
    return wrong


def test_every_import_runs_downwards():
    assert not _wrong(SRC), _wrong(SRC)


def test_the_check_sees_upward_and_sideways_imports(tmp_path):
    (tmp_path / "hebbopt" / "training").mkdir(parents=True)
    (tmp_path / "hebbopt" / "evaluation").mkdir()
    (tmp_path / "hebbopt" / "training" / "x.py").write_text(
        "def f():\n    from hebbopt.sweeps import semisup\n"
    )
    (tmp_path / "hebbopt" / "evaluation" / "y.py").write_text("import hebbopt.training.config\n")
    (tmp_path / "hebbopt" / "sweeps.py").write_text("from hebbopt.training import config\n")  # downwards
    assert _wrong(tmp_path) == [
        "hebbopt.evaluation.y imports hebbopt.training.config",
        "hebbopt.training.x imports hebbopt.sweeps",
        "hebbopt.training.x imports hebbopt.sweeps.semisup",
    ]
