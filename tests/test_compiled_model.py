"""torch.compile(model) with a Hebbian optimizer attached trains, with exactly the eager statistics:
the capture hooks run eagerly between the compiled graphs (torch.compiler.disable)."""

import copy

import pytest
import timm
import torch
from torch import nn

import hebbopt
from hebbopt.rules import RULES


def _conv_pool_conv() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 7 * 7, 5), nn.ReLU(), nn.Linear(5, 3),
    )  # fmt: skip


def _compiled_matches_eager(model: nn.Module, rule: str, x: torch.Tensor, backend: str = "inductor") -> None:
    steps = 2
    torch._dynamo.reset()
    eager = copy.deepcopy(model)
    a = hebbopt.HebbianOptimizer(eager, rule, lr=0.05)
    b = hebbopt.HebbianOptimizer(model, rule, lr=0.05)
    compiled = torch.compile(model, backend=backend)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for i in range(steps):
        batch = x[i::steps]
        with torch.no_grad():
            eager(batch)
            compiled(batch)
        a.step()
        b.step()
    changed = 0
    for (name, p), q in zip(eager.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=f"{rule}: {name}")
        changed += not torch.equal(q, before[name])
    assert changed >= 2, rule  # the hidden layers learned
    a.close()
    b.close()
    # and the compiled model fine-tunes by backprop afterwards
    loss = nn.functional.cross_entropy(compiled(x), torch.zeros(len(x), dtype=torch.long) + 1)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("rule", sorted(RULES))
def test_a_compiled_conv_pool_conv_net_trains_as_eager(rule):
    # dynamo's tracing (where hooks used to fail) with the eager backend: no code generation, fast;
    # inductor itself is exercised by the timm model below
    torch.manual_seed(sum(map(ord, rule)))
    _compiled_matches_eager(_conv_pool_conv(), rule, torch.randn(12, 3, 16, 16), backend="eager")


def test_a_compiled_timm_model_trains_as_eager():
    torch.manual_seed(1)
    model = timm.create_model("softhebb_3l", num_classes=4, width=1 / 16)
    _compiled_matches_eager(model, "softhebb", torch.randn(8, 3, 32, 32))
