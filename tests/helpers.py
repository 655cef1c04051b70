"""Shared test helpers: layer inputs recorded by plain forward hooks (hebbopt.testing), relative errors."""

from __future__ import annotations

import torch
from torch import nn

from hebbopt.rules import RULES
from hebbopt.testing import record_inputs  # noqa: F401  (the tests import it from here)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖; 0 when both are zero (equal), infinite when only ``b`` is."""
    diff, norm = (a.double() - b.double()).norm().item(), b.double().norm().item()
    if norm == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / norm


def reference_delta(rule: str, layer: nn.Module, x: torch.Tensor, **hyper) -> torch.Tensor:
    """ΔW of a stateless rule's per-sample reference, with defaults for the hyper-parameters not given."""
    return RULES[rule].reference(layer, x, **RULES[rule].defaults(**hyper))


def geometry_net(dtype=torch.float64) -> nn.Sequential:
    """Conv layers of 5 geometries (stride 2, padding modes, dilation 2, non-square kernels,
    asymmetric 'same') and two Linear layers, all with biases, BN in between."""
    torch.manual_seed(torch.seed() % 2**31)
    net = nn.Sequential(
        nn.Conv2d(3, 6, (3, 2), stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3, padding=2, dilation=2, padding_mode="reflect"),
        nn.BatchNorm2d(5),
        nn.Conv2d(5, 7, (2, 3), stride=(1, 2), padding=(1, 0), padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(7, 4, (4, 3), padding="same"),
        nn.Conv2d(4, 6, 1, stride=2, padding_mode="replicate", padding=1),
        nn.Flatten(),
        nn.LazyLinear(40),
        nn.ReLU(),
        nn.Linear(40, 9),
        nn.ReLU(),
        nn.Linear(9, 3),
    ).to(dtype)
    net(torch.randn(2, 3, 13, 11, dtype=dtype))
    return net


def assert_step_applies(net, opt, expected: dict[str, torch.Tensor], *batches: torch.Tensor, tol=1e-10):
    """Forward each batch (no grad), step, and check every layer moved by ``expected[name]``."""
    before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
    with torch.no_grad():
        for x in batches:
            net(x)
    opt.step()
    for name, m in opt.layers.items():
        assert rel_err(m.weight.detach() - before[name], expected[name]) < tol, name
