"""timm models: the paper's networks registered, VGG selection, safetensors round trip, pictures."""

import struct

import pytest
import timm
import torch
from torch import nn

import hebbopt


@pytest.mark.parametrize(
    ("name", "size", "fc_in"), [("hebb_alexnet_6l", 32, 2304), ("hebb_alexnet_10l", 210, 4608)]
)
def test_registered_models_shapes_and_cfg(name, size, fc_in):
    assert name in timm.list_models("hebb_*")
    model = timm.create_model(name, num_classes=7)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, size, size) and cfg["classifier"] == "classifier"
    assert len(cfg["mean"]) == 3 and len(cfg["std"]) == 3 and model.default_cfg == cfg
    assert model.pre_logits[1].in_features == fc_in  # the spatial sizes of the paper's figures
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        feats = model.forward_features(x)
        assert feats.shape[1] * feats.shape[2] * feats.shape[3] == fc_in
        assert model.forward_head(feats, pre_logits=True).shape == (2, 4096)
        inter = model.forward_intermediates(x, intermediates_only=True)
        assert [t.shape[1] for t in inter] == [f["num_chs"] for f in model.feature_info]
    model.reset_classifier(3)
    assert model.get_classifier().out_features == 3
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, 4096)


def test_features_only_and_width():
    model = timm.create_model("hebb_alexnet_6l", features_only=True, out_indices=(1, 3))
    outs = model(torch.randn(2, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [128, 256]
    narrow = timm.create_model("hebb_alexnet_6l", width=0.25, num_classes=10)
    assert narrow.features[0].out_channels == 24 and narrow.pre_logits[1].out_features == 1024


def _one_step_changes_only_selected(model, cls, x):
    opt = cls(model, lr=1e-3)
    selected = {id(m.weight) for m in opt.layers.values()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    with torch.no_grad():
        model(x)
    opt.step()
    opt.close()
    for n, p in model.named_parameters():
        assert (id(p) in selected) == (not torch.equal(p, before[n])), n
    head = model.get_classifier()
    w = head.weight.detach().clone()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model(x), torch.randint(0, 10, (len(x),))).backward()
    sgd.step()
    assert not torch.equal(head.weight, w)
    return opt


@pytest.mark.parametrize("cls", [hebbopt.SoftWTAHebb, hebbopt.HPCAHebb])
def test_hebb_alexnet_6l_one_step_then_finetune(cls):
    model = timm.create_model("hebb_alexnet_6l", num_classes=10)
    opt = _one_step_changes_only_selected(model, cls, torch.randn(4, 3, 32, 32))
    assert list(opt.layers) == ["features.0", "features.4", "features.7", "features.11", "pre_logits.1"]


@pytest.mark.parametrize("cls", [hebbopt.SoftWTAHebb, hebbopt.HPCAHebb])
def test_vgg11_bn_at_32px_one_step_then_finetune(cls):
    model = timm.create_model("vgg11_bn", num_classes=10)
    opt = _one_step_changes_only_selected(model, cls, torch.randn(2, 3, 32, 32))
    convs = [n for n, m in model.features.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(opt.layers) == [f"features.{n}" for n in convs] + ["pre_logits.fc1", "pre_logits.fc2"]


@pytest.mark.parametrize("name", ["vgg13", "vgg16_bn", "vgg19"])
def test_vgg_family_selection(name):
    model = timm.create_model(name, num_classes=10, pretrained=False)
    layers = hebbopt.hebbian_layers(model)
    assert "head.fc" not in layers and "pre_logits.fc1" in layers
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == len(layers)  # fc1/fc2 are convs
    only_convs = hebbopt.hebbian_layers(model, exclude=["pre_logits.*"])
    assert set(layers) - set(only_convs) == {"pre_logits.fc1", "pre_logits.fc2"}


def test_unknown_layer_selection_names():
    model = timm.create_model("hebb_alexnet_6l")
    with pytest.raises(ValueError, match="'conv9' matches no"):
        hebbopt.hebbian_layers(model, include=["conv9"])
    with pytest.raises(ValueError, match=r"features\.0, features\.4"):  # lists the layers
        hebbopt.HPCAHebb(hebbopt.hebbian_layers(model, exclude=["head.*"]))
    picked = hebbopt.hebbian_layers(model, include=["features.*"], exclude=["features.0"])
    assert list(hebbopt.HPCAHebb(picked).layers) == ["features.4", "features.7", "features.11"]


def test_safetensors_round_trip_through_timm(tmp_path):
    model = timm.create_model("hebb_alexnet_6l", num_classes=10)
    with hebbopt.HPCAHebb(model, lr=1e-2) as opt:
        with torch.no_grad():
            model(torch.randn(8, 3, 32, 32))
        opt.step()
    path = hebbopt.save_weights(model, tmp_path / "hpca.safetensors")
    loaded = timm.create_model(
        "hebb_alexnet_6l", pretrained=True, num_classes=100, pretrained_cfg_overlay={"file": str(path)}
    )
    saved = model.state_dict()
    for k, v in loaded.state_dict().items():
        if k.startswith("classifier."):
            assert v.shape[0] == 100
        else:
            assert torch.equal(v, saved[k]), k
    fresh = timm.create_model("hebb_alexnet_6l", num_classes=100)
    hebbopt.load_weights(fresh, path, skip=("classifier.",))
    assert torch.equal(fresh.features[0].weight, model.features[0].weight)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = hebbopt.save_weights(timm.create_model("hebb_alexnet_6l", width=0.5), tmp_path / "w.safetensors")
    model = timm.create_model("hebb_alexnet_6l")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"features\.0\.weight: file \(48, 3, 5, 5\) vs model \(96, 3, 5, 5\)"
    ):
        hebbopt.load_weights(model, path)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError, match=r"features\.0\.weight"):
        timm.create_model("hebb_alexnet_6l", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    with pytest.raises(ValueError, match="safetensors"):
        hebbopt.save_weights(model, tmp_path / "w.pt")


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR width, height


def test_filter_pictures(tmp_path):
    model = timm.create_model("hebb_alexnet_6l")
    w, h = _png_size(hebbopt.save_filters(model.features[0], tmp_path / "conv1.png", scale=2))
    # 96 colour 5×5 filters enlarged 2×, a 10-wide grid with 1-px padding.
    assert (w, h) == (10 * 11 + 1, 10 * 11 + 1)
    w, h = _png_size(hebbopt.save_filters(model.features[4], tmp_path / "conv2.png", scale=1, max_filters=8))
    assert (w, h) == (16 * 4 + 1, 8 * 4 + 1)  # 8 filters × 16 grey channel tiles of 3×3
    with pytest.raises(ValueError, match="4-d"):
        hebbopt.filter_grid(model.pre_logits[1])


def test_take_indices_reads_indices_as_timm_does():
    from timm.models._features import feature_take_indices  # timm's own (private) reading, the oracle

    from hebbopt.models.features import take_indices

    for n in (1, 3, 5):
        cases = [None, *range(1, n + 1), [0], [-1], [0, -1], list(range(n)), [n - 1, 0]]
        for indices in cases:
            assert take_indices(n, indices) == feature_take_indices(n, indices), (n, indices)
    for bad in (0, 4, [3], [-4], []):
        with pytest.raises(ValueError, match=r"range|no feature"):
            take_indices(3, bad)


def test_hebb_alexnet_softhebb_block_keeps_the_geometry_and_names_its_settings():
    relu = timm.create_model("hebb_alexnet_6l", num_classes=10)
    soft = timm.create_model("hebb_alexnet_6l", num_classes=10, block="softhebb", head_norm="l2")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        relu.eval(), soft.eval()
        assert [t.shape for t in soft.forward_intermediates(x, intermediates_only=True)] == [
            t.shape for t in relu.forward_intermediates(x, intermediates_only=True)
        ]
        z = soft.forward_head(soft.forward_features(x), pre_logits=True)
    assert z.shape == (3, 4096)
    torch.testing.assert_close(z.square().mean(1), torch.ones(3))  # head_norm l2
    hyper = hebbopt.models.layer_hyper("hebb_alexnet_6l", "softhebb")
    assert list(hebbopt.hebbian_layers(soft)) == list(hyper)  # every hidden layer has its settings
    assert not set(hebbopt.hebbian_layers(relu)) & set(hyper)  # and they never reach the ReLU blocks
    settings = hebbopt.models.alexnet.softhebb_block_settings(5)
    powers = [m.power for m in soft.modules() if isinstance(m, hebbopt.models.Triangle)]
    assert powers == [s[0] for s in settings]
    assert [h["lr"] for h in hyper.values()] == [s[2] for s in settings]
    for bad, message in [({"block": "resnet"}, "block must be one of"), ({"head_norm": "l1"}, "head_norm")]:
        with pytest.raises(ValueError, match=message):
            timm.create_model("hebb_alexnet_6l", **bad)


def test_hebb_alexnet_softhebb_block_trains_by_softhebb_then_every_layer_by_backprop():
    model = timm.create_model("hebb_alexnet_6l", num_classes=10, block="softhebb", width=0.25)
    opt = _one_step_changes_only_selected(model, hebbopt.SoftHebb, torch.randn(6, 3, 32, 32))
    assert list(opt.layers) == [f"features.{i}.conv" for i in range(4)] + ["pre_logits.2"]
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("block", ["bn_relu", "softhebb"])
def test_hebb_vgg11_geometry_timm_interface_and_settings(block):
    model = timm.create_model("hebb_vgg11", num_classes=7, block=block, head_norm="l2")
    assert "hebb_vgg11" in timm.list_models("hebb_*") and model.pretrained_cfg["input_size"] == (3, 32, 32)
    x = torch.randn(3, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
        assert model(x).shape == (3, 7)
        model.train()  # batch statistics (untouched running ones let 8 SoftHebb blocks overflow)
        z = model.forward_head(model.forward_features(x), pre_logits=True)
    # VGG11's convolutions and five halvings: 32 → 16 → 8 → 8 → 4 → 4 → 2 → 2 → 1
    assert [tuple(t.shape[1:]) for t in inter] == [
        (64, 16, 16),
        (128, 8, 8),
        (256, 8, 8),
        (256, 4, 4),
        (512, 4, 4),
        (512, 2, 2),
        (512, 2, 2),
        (512, 1, 1),
    ]
    assert [t.shape[1] for t in inter] == [f["num_chs"] for f in model.feature_info]
    assert z.shape == (3, 512)
    torch.testing.assert_close(z.square().mean(1), torch.ones(3))  # head_norm l2
    hyper = hebbopt.models.layer_hyper("hebb_vgg11", "softhebb")
    layers = list(hebbopt.hebbian_layers(model))
    assert len(layers) == 8
    # the per-layer settings reach exactly the SoftHebb blocks' convolutions, never the bn_relu ones
    assert (layers == list(hyper)) == (block == "softhebb") and (set(layers) & set(hyper) == set()) == (
        block == "bn_relu"
    )
    settings = hebbopt.models.alexnet.softhebb_block_settings(8)
    powers = [m.power for m in model.modules() if isinstance(m, hebbopt.models.Triangle)]
    assert powers == ([s[0] for s in settings] if block == "softhebb" else [])
    assert [h["temperature"] for h in hyper.values()] == [1 / s[1] for s in settings]
    wide = timm.create_model("hebb_vgg11", num_classes=0, block=block, width=0.5, img_size=64)
    assert len([m for m in wide.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 32]) == 1
    assert wide.head_hidden_size == 256 * 2 * 2 and wide(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    feats = timm.create_model("hebb_vgg11", features_only=True, out_indices=(1, 7), block=block)
    assert [o.shape[1:] for o in feats(x)] == [(128, 8, 8), (512, 1, 1)]
    model.reset_classifier(0)
    assert model(x).shape == (3, 512)


def test_hebb_vgg11_refuses_bad_arguments():
    for bad, message in [
        ({"block": "resnet"}, "block must be one of"),
        ({"head_norm": "l1"}, "head_norm"),
        ({"img_size": 16, "block": "softhebb"}, "too small"),  # reflect padding of a 1×1 map
        ({"img_size": 16}, "too small"),
    ]:
        with pytest.raises(ValueError, match=message):
            timm.create_model("hebb_vgg11", **bad)
    with pytest.raises(ValueError, match="HebbVGG has no global pooling"):
        timm.create_model("hebb_vgg11").reset_classifier(3, global_pool="avg")


def test_hebb_vgg11_softhebb_block_trains_by_softhebb_then_every_layer_by_backprop():
    model = timm.create_model("hebb_vgg11", num_classes=10, block="softhebb", width=0.25)
    opt = _one_step_changes_only_selected(model, hebbopt.SoftHebb, torch.randn(6, 3, 32, 32))
    assert list(opt.layers) == [f"features.{i}.conv" for i in range(8)]
    model.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_recipe_builds_hebb_vgg11_for_its_images():
    from hebbopt.data import load_dataset
    from hebbopt.training import load
    from hebbopt.training.models import build_model

    cfg = load(None, ["--model.name", "hebb_vgg11", "--model.kwargs", "{block: softhebb, width: 0.25}"])
    model = build_model(cfg, load_dataset("synthetic", synthetic_size=8, img_size=64), seed=0)
    assert model.head_hidden_size == 128 * 2 * 2  # the 64 px map after five halvings, not 32 px's
    model.train()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
