"""statistics_dtype: a batch's statistics computed in bf16 (rounded once per batch), summed over
batches in float32; the default stays exact with respect to the activations (issue 25, item 3)."""

import pytest
import torch
from torch import nn

import hebbopt
from hebbopt.rules import RULES


def net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 6),
        nn.ReLU(),
        nn.Linear(6, 2),
    )


def captured(rule, dtype, batches):
    model = net()
    opt = hebbopt.HebbianOptimizer(model, rule=rule, lr=1e-3, compile=False, statistics_dtype=dtype)
    with torch.no_grad():
        for x in batches:
            model(x)
    return {name: opt.state[layer.weight]["stats"] for name, layer in opt.layers.items()}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_bf16_statistics_are_float32_sums_close_to_the_exact_ones(rule):
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    exact, low = captured(rule, None, batches), captured(rule, torch.bfloat16, batches)
    for name, stats in exact.items():
        for key, value in stats.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                assert low[name][key] == value if not isinstance(value, torch.Tensor) else True
                continue
            got = low[name][key]
            assert got.dtype == torch.float32, (name, key)
            scale = value.abs().max().clamp_min(1e-6)
            # bf16 keeps 8 significant bits: a few roundings per product and per batch
            assert ((got - value).abs().max() / scale).item() < 0.1, (rule, name, key)
            assert not torch.equal(got, value) or value.abs().max() == 0  # really computed in bf16


def test_the_default_computes_in_float32_even_under_bf16_autocast():
    x = torch.randn(4, 3, 8, 8)
    model = net()
    opt = hebbopt.HebbianOptimizer(model, rule="hpca", lr=1e-3, compile=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    conv = model[0]
    stats = opt.state[conv.weight]["stats"]
    opt.close()  # no more capture: the forward below only recomputes the bf16 output
    # the exact statistics of what the hook saw (the float32 input, the bf16 output): in float64
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        u = conv(x)
    ref = RULES["hpca"].statistics(
        x.double(), u.double(), conv.weight.detach().double(),
        hebbopt.rules.Conv2dGeometry((1, 1), (0, 0), (1, 1)),
    )  # fmt: skip
    assert stats["hebb"].dtype == torch.float32
    torch.testing.assert_close(stats["hebb"].double(), ref["hebb"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [torch.int8, "bfloat16", 16])
def test_an_unknown_statistics_dtype_is_refused(bad):
    with pytest.raises(ValueError, match="statistics_dtype"):
        hebbopt.HebbianOptimizer(net(), rule="hpca", statistics_dtype=bad)


def test_the_named_optimizers_take_it_too():
    opt = hebbopt.SoftHebb(net(), lr=0.01, statistics_dtype=torch.bfloat16)
    assert opt.statistics_dtype is torch.bfloat16
    opt.close()


def test_the_config_key_reaches_the_optimizer_and_bad_values_are_refused(tmp_path):
    from hebbopt.training import load
    from hebbopt.training.config import ConfigError
    from hebbopt.training.pretrain import hebbian_optimizer

    cfg = load(None, ["--pretrain.method", "softhebb", "--pretrain.statistics_dtype", "bfloat16"])
    opt = hebbian_optimizer(cfg, {"conv": nn.Conv2d(3, 4, 3)})
    assert opt.statistics_dtype is torch.bfloat16
    opt.close()
    with pytest.raises(ConfigError, match=r"pretrain\.statistics_dtype"):
        load(None, ["--pretrain.statistics_dtype", "float16"])
