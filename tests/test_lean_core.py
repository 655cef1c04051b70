"""The core install: ``import hebbopt`` and a Hebbian step need none of the recipes' packages.

The recipes' packages (the ``recipes`` extra) are blocked in a fresh interpreter by setting
``sys.modules[name] = None``, which is how Python itself marks a module as absent: ``import name``
raises ``ModuleNotFoundError`` and ``importlib.util.find_spec(name)`` returns None, as in an
environment where the package was never installed.
"""

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parents[1]
RECIPE_ONLY = ["sklearn", "matplotlib", "tensorboard", "tensorboardX", "accelerate"]


def run_without_recipe_packages(code: str) -> dict:
    """Run ``code`` in a new interpreter with :data:`RECIPE_ONLY` absent; it prints one JSON line."""
    prelude = f"import sys\nfor name in {RECIPE_ONLY!r}:\n    sys.modules[name] = None\n"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_optimizer_steps_without_the_recipe_packages(tmp_path):
    got = run_without_recipe_packages(
        f"""
        import json
        import timm, torch
        import hebbopt

        torch.manual_seed(0)
        model = timm.create_model("hebb_alexnet_6l", num_classes=10, width=0.125, img_size=32)
        conv = model.features[0]
        before = conv.weight.detach().clone()
        opt = hebbopt.HebbianOptimizer(model, "hpca", lr=1e-2, diagnostics=True)
        for _ in range(2):
            with torch.no_grad():
                model(torch.randn(8, 3, 32, 32))
            opt.step()
        opt.close()
        mlp = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        first = mlp[0].weight.detach().clone()
        with hebbopt.SoftWTAHebb(mlp, lr=0.1) as swta:  # the hidden Linear; the last one is the head
            with torch.no_grad():
                mlp(torch.randn(5, 6))
            swta.step()
        hebbopt.save_weights(model, {str(tmp_path / "w.safetensors")!r})
        hebbopt.save_filters(conv, {str(tmp_path / "f.png")!r})
        cache = {str(tmp_path / "cache")!r}  # empty: the digits cannot come from an earlier cache
        import hebbopt.data  # the data module too: scikit-learn only when the digits are loaded
        load = hebbopt.data.load_dataset
        synthetic = load("synthetic", synthetic_size=20, img_size=8, cache=cache, verbose=False)
        try:
            load("digits", cache=cache, verbose=False)
            digits = "loaded"
        except ImportError as e:
            digits = str(e)
        try:
            import hebbopt.training
            training = "imported"
        except ImportError as e:
            training = str(e)
        blocked = [m for m in {RECIPE_ONLY!r} if sys.modules.get(m) is not None]
        print(json.dumps({{
            "changed": (conv.weight - before).abs().max().item(),
            "mlp_changed": (mlp[0].weight - first).abs().max().item(),
            "diagnostics": sorted(opt.last_update),
            "train": len(synthetic.train),
            "digits": digits,
            "training": training,
            "loaded": blocked,
        }}))
        """
    )
    assert got["changed"] > 0 and got["mlp_changed"] > 0 and "features.0" in got["diagnostics"]
    assert got["train"] == 20
    assert got["loaded"] == []
    assert "scikit-learn" in got["digits"] and "hebbopt[recipes]" in got["digits"]
    assert "hebbopt[recipes]" in got["training"]
    assert (tmp_path / "w.safetensors").stat().st_size > 0 and (tmp_path / "f.png").stat().st_size > 0


def test_core_dependencies_are_only_what_the_optimizers_and_models_need():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        return {r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
                for r in requirements}  # fmt: skip

    assert names(project["dependencies"]) == {"torch", "torchvision", "timm", "safetensors"}
    recipes = names(project["optional-dependencies"]["recipes"])
    assert {"accelerate", "pyyaml", "tqdm", "scikit-learn", "matplotlib", "tensorboard"} <= recipes


def test_the_readme_installs_the_extras_each_command_needs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    commands = [ln for ln in section.splitlines() if ln.startswith("python3 -m venv")]
    test_command = next(c for c in commands if "pytest" in c)
    main_job = next(c for c in commands if "recipes/semisup.py" in c)
    assert "pip install -q -e '.[dev,docs,recipes]'" in test_command
    assert "pip install -q -e '.[recipes]'" in main_job
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_command in ci.splitlines()


def test_named_seeds_are_stable_across_processes_and_distinct():
    from hebbopt.data.seeds import derive_seed
    from hebbopt.training.models import derive_seed as from_recipes

    purposes = ["init", "labelled", "validation", "pretrain/order/stage0/epoch0", "finetune/order/epoch1"]
    here = {f"{s}:{p}": derive_seed(s, p) for s in (0, 1, 7) for p in purposes}
    assert len(set(here.values())) == len(here)  # every stream its own seed
    assert all(0 <= v < 2**63 for v in here.values()) and from_recipes is derive_seed
    # another interpreter, another hash salt, the core install only: the same values
    code = f"""
        import json
        from hebbopt.data.seeds import derive_seed
        print(json.dumps({{f"{{s}}:{{p}}": derive_seed(s, p) for s in (0, 1, 7) for p in {purposes!r}}}))
        """
    assert run_without_recipe_packages(code) == here
    assert derive_seed(0, "init") == 3912388711783151084  # pinned: runs stay reproducible across versions
    import numpy as np

    assert derive_seed(np.int64(3), "init") == derive_seed(3, "init")
    for bad, error in [((0.5, "init"), TypeError), ((True, "init"), TypeError), ((0, ""), ValueError)]:
        with pytest.raises(error):
            derive_seed(*bad)


def test_the_recipes_derive_every_seed_by_name():
    """No seed arithmetic left (``seed * 1_000_003 + epoch``, ``seed + 1``): derive_seed names them."""
    import re

    sources = [*(ROOT / "src" / "hebbopt" / "training").glob("*.py"), ROOT / "src/hebbopt/data/regimes.py"]
    derived = "derive_seed|order_seed|generator_seed"  # what manual_seed may take: named streams
    pattern = re.compile(rf"seed\s*[*+]|1_000_003|\b1009\b|\b7919\b|manual_seed\((?!{derived})")
    found = [f"{p.name}: {line.strip()}" for p in sources for line in p.read_text().splitlines()
             if pattern.search(line) and not line.lstrip().startswith(("#", '"', "``"))]  # fmt: skip
    assert not found, found
