"""The compiled path: same numbers as the reference, no graph breaks, no recompiles once stable."""

import pytest
import torch
from helpers import geometry_net, record_inputs, reference_delta, rel_err
from test_exactness import check_step_matches_reference
from torch import nn
from torch._dynamo.utils import counters

import hebbopt


@pytest.mark.parametrize(
    ("rule", "hyper"),
    [("swta", {"temperature": 0.05, "similarity": "raised_cos2"}), ("hpca", {"activation": "relu"})],
)
def test_compiled_equals_reference_and_never_recompiles(rule, hyper):
    counters.clear()
    net = geometry_net(torch.float64)
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64)
    check_step_matches_reference(rule, hyper, net, x, 1e-10, compile=True)
    assert counters["stats"]["unique_graphs"] > 0, "nothing was compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])

    cls = hebbopt.SoftWTAHebb if rule == "swta" else hebbopt.HPCAHebb
    opt = cls(net, lr=1e-3, **hyper, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    for _ in range(3):
        with torch.no_grad():
            net(torch.randn(3, 3, 13, 11, dtype=torch.float64))
        opt.step()
    assert counters["stats"]["unique_graphs"] == graphs, "a stable shape recompiled"
    assert not counters["graph_break"]


@pytest.mark.parametrize("rule", ["swta", "hpca"])
def test_compiled_float32(rule):
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 81, 6), nn.Linear(6, 2)
    )
    cls = hebbopt.SoftWTAHebb if rule == "swta" else hebbopt.HPCAHebb
    opt = cls(net, lr=1.0, compile=True)
    x = torch.randn(4, 3, 20, 20)
    inputs = record_inputs(net, opt.layers, x)
    before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
    with torch.no_grad():
        net(x)
    opt.step()
    for name, m in opt.layers.items():
        expected = reference_delta(rule, _as_double(m, before[name]), inputs[name].double())
        assert rel_err(m.weight.detach() - before[name], expected) < 1e-4, name


def _as_double(layer, weight):
    import copy

    layer = copy.deepcopy(layer).double()
    with torch.no_grad():
        layer.weight.copy_(weight.double())
    return layer


def test_compiled_hpca_prefix_form():
    layer = nn.Linear(20, 300).double()  # 6 samples < 300 neurons: the blocked prefix form
    x = torch.randn(6, 20, dtype=torch.float64)
    opt = hebbopt.HPCAHebb([layer], lr=1.0, compile=True)
    expected = reference_delta("hpca", layer, x)
    w0 = layer.weight.detach().clone()
    layer(x)
    opt.step()
    assert rel_err(layer.weight.detach() - w0, expected) < 1e-10
