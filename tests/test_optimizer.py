"""The torch.optim contract: what changes, hooks, state_dict, schedulers, groups, autocast, timm."""

import copy
import gc
import io
import weakref

import pytest
import timm
import torch
from helpers import assert_step_applies, record_inputs, reference_delta, rel_err
from torch import nn

import hebbopt

RULES = [hebbopt.SoftWTAHebb, hebbopt.HPCAHebb]


def small_net(dtype=torch.float32):
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 12),
        nn.BatchNorm1d(12),
        nn.ReLU(),
        nn.Linear(12, 3),
    ).to(dtype)


def forward(net, n=4):
    with torch.no_grad():
        net(torch.randn(n, 3, 8, 8, dtype=next(net.parameters()).dtype))


@pytest.mark.parametrize("cls", RULES)
def test_only_hooked_weights_change(cls):
    net = small_net()
    opt = cls(net, lr=0.1)
    assert list(opt.layers) == ["0", "4", "8"]
    before = copy.deepcopy(net.state_dict())
    for _ in range(2):
        forward(net)
        opt.step()
    for name, p in net.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name in {"0.weight", "4.weight", "8.weight"}), name


def test_eval_mode_captures_nothing_and_step_without_forward_is_noop():
    net = small_net()
    opt = hebbopt.HPCAHebb(net, lr=0.1)
    before = copy.deepcopy(net.state_dict())
    assert opt.step() is None  # nothing captured yet
    net.eval()
    forward(net)
    opt.step()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all("stats" not in s for s in opt.state.values())


def test_close_removes_hooks_and_context_manager():
    net = small_net()
    n_hooks = sum(len(m._forward_hooks) for m in net.modules())
    with hebbopt.SoftWTAHebb(net) as opt:
        assert sum(len(m._forward_hooks) for m in net.modules()) == n_hooks + 3
    assert sum(len(m._forward_hooks) for m in net.modules()) == n_hooks
    forward(net)
    assert all("stats" not in s for s in opt.state.values())


def test_hooks_keep_no_reference_to_activations():
    net = small_net()
    opt = hebbopt.HPCAHebb(net)
    x = torch.randn(4, 3, 8, 8)
    seen = []
    net[4].register_forward_hook(lambda m, args, out: seen.append((weakref.ref(args[0]), weakref.ref(out))))
    with torch.no_grad():
        net(x)
    gc.collect()
    assert seen and all(a() is None and o() is None for a, o in seen)
    assert "stats" in opt.state[net[4].weight]


@pytest.mark.parametrize("cls", RULES)
def test_state_dict_round_trip_resumes_bit_identically(cls):
    torch.manual_seed(0)
    data = [torch.randn(4, 3, 8, 8) for _ in range(5)]
    net = small_net()
    start = copy.deepcopy(net)

    def run(model, opt, batches):
        for i, x in batches:
            with torch.no_grad():
                model(x)
            if i % 2 == 1:
                opt.step()

    opt = cls(net, lr=0.2)
    run(net, opt, enumerate(data))

    resumed_net = copy.deepcopy(start)
    opt2 = cls(resumed_net, lr=0.2)
    run(resumed_net, opt2, list(enumerate(data))[:3])  # stop with statistics pending
    buf = io.BytesIO()
    torch.save({"model": resumed_net.state_dict(), "opt": opt2.state_dict()}, buf)
    opt2.close()
    buf.seek(0)
    ckpt = torch.load(buf)
    fresh = copy.deepcopy(start)
    fresh.load_state_dict(ckpt["model"])
    opt3 = cls(fresh, lr=0.2)
    opt3.load_state_dict(ckpt["opt"])
    assert any("stats" in s for s in opt3.state.values())
    run(fresh, opt3, list(enumerate(data))[3:])
    for a, b in zip(net.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert opt.state_dict()["state"].keys() == opt3.state_dict()["state"].keys()


def test_zero_grad_is_harmless():
    net = small_net()
    opt = hebbopt.HPCAHebb(net)
    net(torch.randn(4, 3, 8, 8)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    opt.zero_grad()
    assert all(torch.equal(p.grad, g) for p, g in zip(net.parameters(), grads, strict=True))
    assert all("stats" in opt.state[m.weight] for m in opt.layers.values())


def test_param_groups_add_param_group_and_lr_scheduler():
    net = small_net(torch.float64)
    opt = hebbopt.SoftWTAHebb([{"modules": [net[0]], "lr": 0.5, "temperature": 0.5}], lr=0.1)
    opt.add_param_group({"modules": [net[4], net[8]], "similarity": "dot", "temperature": 2.0})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.1]
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    forward(net)
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.05]
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    inputs = record_inputs(net, opt.layers, x)
    group0, group1 = {"temperature": 0.5}, {"temperature": 2.0, "similarity": "dot"}
    settings = {"layer0": (0.25, group0), "layer1": (0.05, group1), "layer2": (0.05, group1)}
    expected = {
        n: lr * reference_delta("swta", opt.layers[n], inputs[n], **hyper)
        for n, (lr, hyper) in settings.items()
    }
    assert_step_applies(net, opt, expected, x)
    assert "layer0" in opt.describe() and "Conv2d" in repr(opt)


@pytest.mark.parametrize("cls", RULES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_accumulates_float32_close_to_fp32_update(cls, dtype):
    net = small_net()
    ref_net = copy.deepcopy(net)
    opt, ref = cls(net, lr=1.0), cls(ref_net, lr=1.0)
    x = torch.randn(8, 3, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        net(x)
    with torch.no_grad():
        ref_net(x)
    for m in opt.layers.values():
        stats = opt.state[m.weight]["stats"]
        assert all(v.dtype == torch.float32 for v in stats.values() if isinstance(v, torch.Tensor))
    before = [m.weight.detach().clone() for m in opt.layers.values()]
    opt.step()
    ref.step()
    for w0, m, r in zip(before, opt.layers.values(), ref.layers.values(), strict=True):
        assert m.weight.dtype == torch.float32
        assert rel_err(m.weight.detach() - w0, r.weight.detach() - w0) < 5e-2


def test_timm_model_hooks_all_but_classifier():
    model = timm.create_model("resnet18", num_classes=5)
    layers = hebbopt.hebbian_layers(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(layers) == convs and "fc" not in layers
    opt = hebbopt.HPCAHebb(model, lr=1e-3)
    head = model.get_classifier().weight.detach().clone()
    model(torch.randn(2, 3, 32, 32))
    opt.step()
    assert torch.equal(model.get_classifier().weight, head)
    assert all(opt.state[m.weight]["step"] == 1 for m in layers.values())


def test_plain_model_excludes_last_linear():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.Linear(6, 2))
    assert list(hebbopt.hebbian_layers(net)) == ["0", "2"]


def test_load_state_dict_hyper_parameters_reach_the_hooks():
    net = small_net(torch.float64)
    saved = hebbopt.SoftWTAHebb(net, lr=0.3, temperature=0.7, similarity="dot")
    state = copy.deepcopy(saved.state_dict())
    saved.close()
    opt = hebbopt.SoftWTAHebb(net, lr=0.1)  # other hyper-parameters, replaced by the loaded ones
    opt.load_state_dict(state)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    inputs = record_inputs(net, opt.layers, x)
    expected = {
        n: 0.3 * reference_delta("swta", m, inputs[n], temperature=0.7, similarity="dot")
        for n, m in opt.layers.items()
    }
    assert_step_applies(net, opt, expected, x)


def test_inference_mode_and_no_grad_forwards_accumulate_together():
    net = small_net(torch.float64)
    opt = hebbopt.HPCAHebb(net, lr=1.0)
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.eval()  # batch statistics would differ between the halves
    inputs = record_inputs(net, opt.layers, x)
    expected = {n: reference_delta("hpca", m, inputs[n]) for n, m in opt.layers.items()}
    with torch.inference_mode():
        net(x[:4])
    assert_step_applies(net, opt, expected, x[4:])
