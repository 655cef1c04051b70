"""Bad input: a clear error, and weights and statistics left as they were."""

import copy
import math

import pytest
import torch
from torch import nn

import hebbopt

RULES = [hebbopt.SoftWTAHebb, hebbopt.HPCAHebb]


def net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.Linear(5, 2)
    )


def assert_same(a, b):
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


@pytest.mark.parametrize("cls", RULES)
@pytest.mark.parametrize("lr", [-1e-3, math.nan, math.inf, "0.1", torch.ones(2)])
def test_invalid_learning_rate(cls, lr):
    model = net()
    with pytest.raises(ValueError, match="invalid learning rate"):
        cls(model, lr=lr)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize("temperature", [0, -0.1, math.nan])
def test_invalid_temperature(temperature):
    with pytest.raises(ValueError, match="invalid temperature"):
        hebbopt.SoftWTAHebb(net(), temperature=temperature)


def test_invalid_rule_options():
    with pytest.raises(ValueError, match="similarity"):
        hebbopt.SoftWTAHebb(net(), similarity="cosine")
    with pytest.raises(ValueError, match="activation"):
        hebbopt.HPCAHebb(net(), activation="tanh")
    with pytest.raises(ValueError, match="compile"):
        hebbopt.HPCAHebb(net(), compile="yes")


def test_unsupported_modules_and_models():
    with pytest.raises(TypeError, match=r"nn\.Conv2d and nn\.Linear only"):
        hebbopt.HPCAHebb([nn.ReLU()])
    with pytest.raises(ValueError, match="besides its classifier"):
        hebbopt.HPCAHebb(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)))
    with pytest.raises(ValueError, match="groups=2"):
        hebbopt.HPCAHebb([nn.Conv2d(4, 4, 3, groups=2)])
    with pytest.raises(ValueError, match="groups=4"):
        hebbopt.SoftWTAHebb(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.LazyLinear(2)))
    with pytest.raises(TypeError, match="not parameters"):
        hebbopt.HPCAHebb(net().parameters())
    with pytest.raises(TypeError, match="'modules' key"):
        hebbopt.HPCAHebb([{"params": list(net().parameters())}])
    with pytest.raises(ValueError, match="lazy"):
        hebbopt.HPCAHebb([nn.LazyLinear(3)])

    class Custom(nn.Conv2d):
        def forward(self, x):
            return super().forward(x[..., 1:, 1:])

    with pytest.raises(TypeError, match=r"overrides Conv2d\.forward"):
        hebbopt.HPCAHebb([Custom(3, 4, 3)])
    model = net()
    opt = hebbopt.HPCAHebb(model)
    with pytest.raises(ValueError, match="already hooked"):
        opt.add_param_group({"modules": [model[0]]})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", RULES)
def test_non_finite_statistics_raise_and_change_nothing(cls):
    model = net()
    opt = cls(model, lr=0.1)
    ref = copy.deepcopy(model)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        model(x)  # healthy statistics for every layer ...
        x[1, :, 2, 2] = math.nan
        model(x)  # ... then NaN reaches conv 0 and, through it, the Linear layer
    with pytest.raises(FloatingPointError, match="non-finite"):
        opt.step()
    assert_same(model, ref)
    assert all("stats" not in s and "step" not in s for s in opt.state.values())
    with torch.no_grad():
        model(torch.randn(2, 3, 6, 6))
    opt.step()  # the optimizer still works afterwards
    assert not torch.equal(model[0].weight, ref[0].weight)


@pytest.mark.parametrize("cls", RULES)
def test_weight_changed_between_forward_and_step(cls):
    model = net()
    opt = cls(model, lr=0.1)
    with torch.no_grad():
        model(torch.randn(2, 3, 6, 6))
        model[3].weight.data = torch.randn(5, 4 * 4 * 4 + 1)
    ref = copy.deepcopy(model)
    with pytest.raises(ValueError, match="weight shape"):
        opt.step()
    assert_same(model, ref)

    model = net()
    opt = cls(model, lr=0.1)
    with torch.no_grad():
        model(torch.randn(2, 3, 6, 6))
    model[0].weight = nn.Parameter(torch.randn(4, 3, 3, 3))
    ref = copy.deepcopy(model)
    with pytest.raises(ValueError, match="replaced"):
        opt.step()
    assert_same(model, ref)


def test_negative_lr_from_a_scheduler_is_refused_at_step():
    model = net()
    opt = hebbopt.HPCAHebb(model, lr=0.1)
    with torch.no_grad():
        model(torch.randn(2, 3, 6, 6))
    opt.param_groups[0]["lr"] = -1.0
    ref = copy.deepcopy(model)
    with pytest.raises(ValueError, match="invalid learning rate"):
        opt.step()
    assert_same(model, ref)
