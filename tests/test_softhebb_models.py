"""The SoftHebb networks in timm: shapes, layer make-up, initialisation, Triangle, layer selection."""

import math

import pytest
import timm
import torch
from torch import nn

import hebbopt
from hebbopt.models.softhebb import SOFTHEBB_LAYER_HYPER, SOFTHEBB_LAYERS, MaxPool2d, SoftHebbNet, Triangle

# (name, input size, width used for the real forward passes, batch); 4l/5l are thinned to stay fast.
CASES = [("softhebb_3l", 32, 1.0, 2), ("softhebb_4l", 96, 0.25, 1), ("softhebb_5l", 160, 0.125, 1)]


@pytest.mark.parametrize(("name", "size", "width", "batch"), CASES)
def test_registered_shapes_and_cfg(name, size, width, batch):
    assert name in timm.list_models("softhebb_*")
    model = timm.create_model(name, num_classes=7, width=width)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, size, size) and cfg["classifier"] == "head"
    assert cfg["first_conv"] == "blocks.0.conv" and model.get_classifier() is model.head
    model.eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (batch, 7)
        feats = model.forward_features(x)
        assert feats.shape[1:] == (model.blocks[-1].conv.out_channels, *model.map_size)
        assert model.forward_head(feats, pre_logits=True).shape == (batch, model.num_features)
        inter = model.forward_intermediates(x, intermediates_only=True)
        assert [t.shape[1] for t in inter] == [f["num_chs"] for f in model.feature_info]
        assert torch.equal(inter[-1], feats)
    assert model.head.in_features == model.num_features == math.prod(feats.shape[1:])


def test_softhebb_3l_feature_size():
    model = timm.create_model("softhebb_3l", num_classes=10)
    assert model.num_features == 1536 * 4 * 4 == 24_576
    assert model.head.in_features == 24_576 and model.head.out_features == 10
    assert [b.conv.out_channels for b in model.blocks] == [96, 384, 1536]
    assert [b.conv.kernel_size for b in model.blocks] == [(5, 5), (3, 3), (3, 3)]
    assert [b.act.power for b in model.blocks] == [0.7, 1.4, 1.0]
    assert isinstance(model.head_drop, nn.Dropout) and model.head_drop.p == 0.5
    pools = [(type(b.pool), b.pool.kernel_size, b.pool.stride, b.pool.padding) for b in model.blocks]
    assert pools == [(MaxPool2d, 4, 2, 1), (MaxPool2d, 4, 2, 1), (nn.AvgPool2d, 2, 2, 0)]
    assert timm.create_model("softhebb_3l", img_size=64).num_features == 1536 * 8 * 8


@pytest.mark.parametrize(
    ("name", "channels", "flat"),
    [
        ("softhebb_4l", [96, 384, 1536, 6144], 6144 * 6 * 6),
        ("softhebb_5l", [48, 192, 768, 3072, 12288], 12288 * 5 * 5),
    ],
)
def test_full_width_sizes_on_meta(name, channels, flat):
    with torch.device("meta"):  # the full-width networks without allocating their weights
        model = timm.create_model(name)
    assert [b.conv.out_channels for b in model.blocks] == channels
    assert model.num_features == model.head.in_features == flat
    assert [b.conv.kernel_size[0] for b in model.blocks] == [s.kernel for s in SOFTHEBB_LAYERS[name]]
    assert [b.act.power for b in model.blocks] == [s.power for s in SOFTHEBB_LAYERS[name]]


def test_init_std_survives_timm_build():
    torch.manual_seed(0)
    model = timm.create_model("softhebb_3l", num_classes=10)
    for block in model.blocks:
        w = block.conv.weight.detach()
        fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        expected = 25 / math.sqrt(fan_in)
        assert w.std().item() == pytest.approx(expected, rel=0.03)
        assert abs(w.mean().item()) < 0.03 * expected


def test_conv_padding_bias_and_norm():
    model = timm.create_model("softhebb_3l", width=0.25)
    for block in model.blocks:
        conv = block.conv
        assert conv.padding_mode == "reflect" and conv.bias is None
        assert conv.padding == (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
        assert isinstance(block.norm, nn.BatchNorm2d) and not block.norm.affine
        assert isinstance(block.act, Triangle)
    # 'same' size: each conv keeps its input's spatial size
    x = torch.randn(1, 3, 32, 32)
    block = model.blocks[0]
    assert block.conv(block.norm(x)).shape[-2:] == (32, 32)


@pytest.mark.parametrize("power", [0.7, 1.0, 1.4, 2.0])
def test_triangle_matches_literal_formula(power):
    torch.manual_seed(1)
    u = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    expected = torch.zeros_like(u)
    b_, c_, h_, w_ = u.shape
    for b in range(b_):
        for h in range(h_):
            for w in range(w_):
                mean = sum(u[b, c, h, w].item() for c in range(c_)) / c_
                for c in range(c_):
                    expected[b, c, h, w] = max(u[b, c, h, w].item() - mean, 0.0) ** power
    before = u.clone()
    out = Triangle(power=power, inplace=True)(u)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(u, before)  # never modifies its input


def test_triangle_is_a_timm_activation():
    assert timm.layers.get_act_layer("triangle") is Triangle
    assert timm.layers.create_act_layer("triangle", power=1.4).power == 1.4


def test_reset_classifier():
    model = timm.create_model("softhebb_3l", num_classes=10, width=0.25)
    x = torch.randn(2, 3, 32, 32)
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3 and model.num_classes == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="global pooling"):
        model.reset_classifier(10, global_pool="avg")


def test_features_only_and_errors():
    model = timm.create_model("softhebb_3l", features_only=True, width=0.25, out_indices=(0, 2))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape[1:]) for o in outs] == [(24, 16, 16), (384, 4, 4)]
    assert model.feature_info.reduction() == [2, 8]
    with pytest.raises(ValueError, match="too small"):
        SoftHebbNet(SOFTHEBB_LAYERS["softhebb_3l"], img_size=4, width=0.05)


@pytest.mark.parametrize(("name", "size", "width", "batch"), CASES)
def test_hebbian_layers_are_the_convs_and_hyper_names_match(name, size, width, batch):
    model = timm.create_model(name, num_classes=10, width=width)
    layers = hebbopt.hebbian_layers(model)
    n = len(SOFTHEBB_LAYERS[name])
    assert list(layers) == [f"blocks.{i}.conv" for i in range(n)]
    assert all(isinstance(m, nn.Conv2d) for m in layers.values())
    assert model.head not in layers.values()
    assert list(SOFTHEBB_LAYER_HYPER[name]) == list(layers)


def test_layer_hyper_values_3l():
    hyper = SOFTHEBB_LAYER_HYPER["softhebb_3l"]
    assert hyper["blocks.0.conv"] == {"temperature": 1.0, "lr": 0.08}
    assert hyper["blocks.1.conv"] == pytest.approx({"temperature": 1 / 0.65, "lr": 0.005})
    assert hyper["blocks.2.conv"] == pytest.approx({"temperature": 4.0, "lr": 0.01})


def test_param_groups_from_hyper_one_step():
    torch.manual_seed(0)
    model = timm.create_model("softhebb_3l", num_classes=10, width=0.125)
    groups = [
        {"modules": [model.get_submodule(name)], **hyper}
        for name, hyper in SOFTHEBB_LAYER_HYPER["softhebb_3l"].items()
    ]
    opt = hebbopt.SoftWTAHebb(groups, similarity="dot")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    opt.step()
    opt.close()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {f"blocks.{i}.conv.weight" for i in range(3)}


@pytest.mark.parametrize("power", [1.0, 2.0, 0.7])
def test_triangle_in_place_gives_the_out_of_place_values_and_gradients(power):
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    literal = torch.relu(x - x.mean(dim=1, keepdim=True)) ** power
    got = Triangle(power)(x)
    assert torch.equal(got, literal)
    g = torch.randn_like(literal)
    (want,) = torch.autograd.grad(literal, x, g)
    (have,) = torch.autograd.grad(got, x, g)
    assert torch.allclose(have, want, atol=1e-12)
    with torch.no_grad():
        assert torch.equal(Triangle(power)(x), literal)
    assert torch.equal(x, before)  # the input is never modified


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("spec", [(4, 2, 1), (2, 2, 0), (3, 1, 1)])
def test_max_pool_equals_torch_pooling_and_is_untouched_under_autograd(dtype, spec, monkeypatch):
    layouts = []
    real = torch.nn.functional.max_pool2d
    monkeypatch.setattr(torch.nn.modules.pooling.F, "max_pool2d", lambda x, *a, **k: layouts.append(
        x.is_contiguous(memory_format=torch.channels_last)) or real(x, *a, **k))  # fmt: skip
    ours, theirs = MaxPool2d(*spec), nn.MaxPool2d(*spec)
    x = torch.randint(-3, 4, (3, 5, 11, 9)).to(dtype)  # ties in every window
    x[0, 1, 2, 3] = float("-inf")
    with torch.no_grad():
        fast = ours(x)
    assert layouts == [True]  # pooled through a channels-last copy
    expected = real(x, *spec)
    assert torch.equal(fast, expected) and fast.is_contiguous()
    cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(ours(cl), real(cl, *spec))
    layouts.clear()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(a).square().sum().backward()
    theirs(b).square().sum().backward()
    assert layouts == [False, False] and torch.equal(a.grad, b.grad)  # autograd: torch's own pooling


def test_softhebb_blocks_use_the_fast_pool():
    for name, kwargs in [("softhebb_3l", {}), ("hebb_vgg11", {"block": "softhebb"}), ("hebb_vgg11", {})]:
        net = timm.create_model(name, num_classes=10, **kwargs)
        pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
        assert pools and all(type(m) is MaxPool2d for m in pools), name


@pytest.mark.parametrize(
    ("name", "kwargs"), [("softhebb_3l", {}), ("hebb_vgg11", {"block": "softhebb"}), ("hebb_alexnet_6l", {})]
)
def test_hebbian_forward_stops_at_the_classifier_input_with_the_same_step(name, kwargs):
    """The recipe's Hebbian forward leaves out the head's dropout and classifier, and the step it
    feeds moves every Hebbian layer exactly as after the whole forward."""
    from hebbopt.training.pretrain import hebbian_forward

    nets = [timm.create_model(name, num_classes=10, **kwargs).train() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    ran = []
    nets[0].get_classifier().register_forward_hook(lambda *a: ran.append(True))
    x = torch.randn(4, 3, 32, 32)
    for net, whole in zip(nets, (False, True), strict=True):
        layers = hebbopt.hebbian_layers(net)
        opt = hebbopt.HebbianOptimizer(layers, "softhebb", lr=0.01)
        forward = net if whole else hebbian_forward(net, layers)
        assert (forward is net) == whole
        with torch.no_grad():
            forward(x)
        opt.step()
        opt.close()
    assert not ran  # the classifier never ran
    for (key, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_hebbian_forward_is_the_whole_forward_where_the_classifier_is_hebbian_or_the_model_unknown():
    from hebbopt.training.pretrain import hebbian_forward

    net = timm.create_model("softhebb_3l", num_classes=10)
    assert hebbian_forward(net, {"head": net.get_classifier(), **hebbopt.hebbian_layers(net)}) is net
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))
    assert hebbian_forward(plain, hebbopt.hebbian_layers(plain)) is plain
