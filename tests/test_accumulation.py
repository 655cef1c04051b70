"""Statistics are sums: k forward passes then one step == one forward of the concatenated batch."""

import copy

import pytest
import torch
from helpers import rel_err
from torch import nn

import hebbopt


def net64():
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 20),
        nn.ReLU(),
        nn.Linear(20, 4),
    ).double()


@pytest.mark.parametrize("cls", [hebbopt.SoftWTAHebb, hebbopt.HPCAHebb])
@pytest.mark.parametrize("parts", [2, 4])
def test_micro_batches_equal_one_large_batch(cls, parts):
    a = net64()
    b = copy.deepcopy(a)
    opt_a, opt_b = cls(a, lr=0.5), cls(b, lr=0.5)
    init = {name: p.detach().clone() for name, p in a.named_parameters()}
    for _ in range(2):
        x = torch.randn(8, 3, 10, 10, dtype=torch.float64)
        with torch.no_grad():
            a(x)
            for chunk in x.chunk(parts):
                b(chunk)
        opt_a.step()
        opt_b.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert rel_err(pb, pa) < 1e-12, name
        hooked = name in ("0.weight", "2.weight", "5.weight")
        assert hooked != torch.equal(pa, init[name]), name
