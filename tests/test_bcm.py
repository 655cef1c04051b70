"""BCM, the rule with state: its closed form over several steps, and its cost (one file, one line).

The generic suite (test_rules.py, test_distributed.py) checks BCM like every rule against its
per-sample reference; here the update is written out as the issue states it, independently of
both the rule file and the reference.
"""

import pathlib
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import rel_err
from torch import nn

import hebbopt

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every sample's input as a row: the Linear rows, or every zero-padded patch of every image."""
    if isinstance(layer, nn.Linear):
        return x
    cols = F.unfold(x, layer.kernel_size, padding=layer.padding, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


@pytest.mark.parametrize(
    ("layer", "shape"),
    [(nn.Linear(7, 5), (11, 7)), (nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6))],
    ids=["linear", "conv-strided-padded"],
)
def test_bcm_closed_form_over_consecutive_steps(layer, shape):
    torch.manual_seed(torch.seed() % 2**31)
    layer = layer.double()
    lr, tau = 0.05, 3.0
    opt = hebbopt.HebbianOptimizer(layer, rule="bcm", lr=lr, tau=tau, compile=False)
    w = layer.weight.detach().clone().flatten(1)
    theta = torch.zeros(w.shape[0], dtype=torch.float64)
    for _ in range(4):
        x = torch.randn(shape, dtype=torch.float64)
        xs = rows(layer, x)
        u = xs @ w.T  # N×units, bias excluded
        w = w + lr * (u * (u - theta)).T @ xs / xs.shape[0]  # θ from before this step
        theta = theta + ((u * u).mean(0) - theta) / tau
        layer(x)
        opt.step()
        assert rel_err(layer.weight.detach().flatten(1), w) < 1e-10
        assert rel_err(opt.state[layer.weight]["rule_state"]["theta"], theta) < 1e-10
    assert theta.abs().min() > 0  # the threshold has moved, and the weights followed it


def test_bcm_costs_one_rule_file_and_one_registry_line():
    named = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "src").rglob("*.py")
        if "bcm" in p.read_text(encoding="utf-8").lower()
    )
    # the rule file and its registry line; besides them only the optional named alias (BCMHebb in
    # named.py, exported by the package), which every shipped rule has
    assert named == ["src/hebbopt/__init__.py", "src/hebbopt/named.py", "src/hebbopt/rules/__init__.py",
                     "src/hebbopt/rules/bcm.py"]  # fmt: skip
    for alias in ("__init__.py", "named.py"):
        text = (ROOT / "src" / "hebbopt" / alias).read_text(encoding="utf-8").lower()
        assert set(re.findall(r"[\w.]*bcm\w*", text)) <= {"bcmhebb", "bcm", "hebbopt.rules.bcm"}
    registry = (ROOT / "src" / "hebbopt" / "rules" / "__init__.py").read_text(encoding="utf-8")
    assert [line for line in registry.splitlines() if "bcm" in line.lower()] == [
        'RULE_MODULES = ("swta", "hpca", "softhebb", "krotov", "oja", "bcm")'
    ]
