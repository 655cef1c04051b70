"""A step that proves its new weights finite beforehand keeps no copy of them (issue 25, item 1).

HPCA and soft-WTA give ``Rule.bound``: an upper bound on ``max|W + lr·ΔW|`` from ``max|W|`` and the
statistics. Where it is small enough, ``step()`` applies the update without the weight-sized copy it
otherwise keeps to restore from; the restore after a non-finite step stays exact either way.
"""

import dataclasses

import pytest
import torch
from torch import nn

import hebbopt
from hebbopt.rules import RULES, Conv2dGeometry

BOUNDED = sorted(name for name, rule in RULES.items() if rule.bound is not None)


def test_the_rules_of_the_speed_goals_have_a_bound():
    assert {"hpca", "swta"} <= set(BOUNDED)


def layer_and_stats(rule, kind, dtype, scale):
    """A random layer, its batch statistics, and ``max|W|``."""
    if kind == "linear":
        layer = nn.Linear(int(torch.randint(3, 12, ())), int(torch.randint(2, 9, ())), bias=False)
        x = scale * torch.randn(int(torch.randint(2, 20, ())), layer.in_features)
        geometry = None
    else:
        layer = nn.Conv2d(3, int(torch.randint(2, 7, ())), 3, bias=False)
        x = scale * torch.randn(int(torch.randint(1, 4, ())), 3, 7, 7)
        geometry = Conv2dGeometry((1, 1), (0, 0), (1, 1))
    layer = layer.to(dtype)
    x = x.to(dtype)
    w = layer.weight.detach()
    with torch.no_grad():
        u = layer(x)
    stats = rule.statistics(x, u, w, geometry, **rule.kernel_kwargs(rule.defaults())[0])
    lo, hi = torch.aminmax(w)
    return w, stats, torch.maximum(lo.float().abs(), hi.float().abs())


@pytest.mark.parametrize("rule", BOUNDED)
@pytest.mark.parametrize("kind", ["linear", "conv"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_bound_is_never_below_the_new_weights(rule, kind, dtype):
    rule = RULES[rule]
    for _ in range(20):
        scale = float(10 ** torch.empty(()).uniform_(-2, 3))
        w, stats, absmax = layer_and_stats(rule, kind, dtype, scale)
        lr = torch.tensor(float(10 ** torch.empty(()).uniform_(-4, 2)), dtype=dtype)
        new = w.clone()
        rule.apply(new, stats, {}, lr)
        bound = rule.bound(absmax, stats, lr.float())
        assert new.abs().max().item() <= bound.item() * (1 + 1e-5)


@pytest.mark.parametrize("rule", BOUNDED)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_statistic_gives_a_non_finite_bound(rule, value):
    rule = RULES[rule]
    _, stats, absmax = layer_and_stats(rule, "linear", torch.float32, 1.0)
    for key, v in stats.items():
        if not isinstance(v, torch.Tensor):
            continue
        spoilt = dict(stats)
        spoilt[key] = v.clone().float()
        spoilt[key].view(-1)[int(torch.randint(spoilt[key].numel(), ()))] = value
        assert not torch.isfinite(rule.bound(absmax, spoilt, torch.tensor(1e-3))), key


def model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 2)
    )


@pytest.mark.parametrize("rule", BOUNDED)
def test_without_the_copy_the_weights_are_those_of_the_copy_path(rule):
    # diagnostics=True takes the copy path (it reports the change from the copy)
    fast, kept = model(), model()
    opt_fast = hebbopt.HebbianOptimizer(fast, rule=rule, lr=0.05, compile=False)
    opt_kept = hebbopt.HebbianOptimizer(kept, rule=rule, lr=0.05, compile=False, diagnostics=True)
    for _ in range(3):
        x = torch.randn(4, 3, 8, 8)
        with torch.no_grad():
            fast(x), kept(x)
        opt_fast.step()
        opt_kept.step()
    for a, b in zip(fast.parameters(), kept.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not opt_fast._before  # no weight was copied
    assert opt_kept._before


@pytest.mark.parametrize("rule", BOUNDED)
def test_nan_weights_take_the_copy_path_and_restore_them(rule):
    net = model()
    opt = hebbopt.HebbianOptimizer(net, rule=rule, lr=0.05, compile=False)
    with torch.no_grad():
        net(torch.randn(4, 3, 8, 8))
        net[0].weight[0, 0, 0, 0] = float("nan")
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(FloatingPointError):
        opt.step()
    for k, v in net.state_dict().items():
        assert torch.equal(torch.isnan(v), torch.isnan(saved[k])), k
        assert torch.equal(v.nan_to_num(), saved[k].nan_to_num()), k


def test_a_rule_with_state_cannot_have_a_bound():
    with pytest.raises(ValueError, match="stateless"):
        dataclasses.replace(RULES["bcm"], bound=RULES["hpca"].bound)
