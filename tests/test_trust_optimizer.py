"""Issue 20, items 14-20: the optimizer keeps its promises under copies, typos, overflows and misuse."""

import copy
import gc
import io
import pickle
import warnings

import pytest
import timm
import torch
from torch import nn

import hebbopt
from hebbopt.rules import RULES


def net(dtype=torch.float32):
    return nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 2)
    ).to(dtype)


def forward(model, dtype=torch.float32, n=4):
    with torch.no_grad():
        model(torch.randn(n, 3, 8, 8, dtype=dtype))


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def same(model, saved):
    return all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- 14: unknown param-group keys
def test_a_misspelt_hyper_parameter_is_refused_with_the_nearest_name():
    model = net()
    for make in (
        lambda: hebbopt.HebbianOptimizer(model, rule="swta", temprature=0.1),
        lambda: hebbopt.HebbianOptimizer([{"modules": model, "temprature": 0.1}], rule="swta"),
    ):
        with pytest.raises(ValueError, match="did you mean 'temperature'"):
            make()
    opt = hebbopt.SoftWTAHebb(model, lr=0.1)
    before = weights(model)
    opt.param_groups[0]["temprature"] = 0.1  # edited by hand: refused before use, not ignored
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        forward(model)
    del opt.param_groups[0]["temprature"]
    forward(model)
    opt.param_groups[0]["temprature"] = 0.1
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        opt.step()
    assert same(model, before)
    del opt.param_groups[0]["temprature"]
    saved = opt.state_dict()
    saved["param_groups"][0]["temprature"] = 0.1
    with pytest.raises(ValueError, match="did you mean 'temperature'"):
        opt.load_state_dict(saved)


def test_keys_that_torch_schedulers_write_are_accepted():
    model = net()
    opt = hebbopt.HPCAHebb(model, lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=4, cycle_momentum=False)
    for _ in range(2):
        forward(model)
        opt.step()
        scheduler.step()
    assert {"initial_lr", "max_lr", "min_lr"} <= set(opt.param_groups[0])


# ---------------------------------------------------------------- 15: copies and pickles
def _through_pickle(obj):
    return pickle.loads(pickle.dumps(obj))


def _through_torch_save(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("copier", [copy.deepcopy, _through_pickle, _through_torch_save])
def test_model_and_optimizer_copied_together_are_a_working_pair(copier):
    model = net()
    opt = hebbopt.HebbianOptimizer(model, rule="oja", lr=0.05, diagnostics=True)
    forward(model)  # pending statistics travel with the copy
    model2, opt2 = copier((model, opt))
    assert list(opt2.layers) == list(opt.layers)
    assert opt2.layers["0"] is model2[0] and opt2.layers["3"] is model2[3]
    assert opt2.describe() == opt.describe()
    opt.step()
    opt2.step()  # the same statistics and weights give the same update
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))
    original = weights(model)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model2(x)
    assert all("stats" not in s for s in opt.state.values())  # the copy feeds only its own optimizer
    opt2.step()
    opt.step()  # nothing captured: a no-op
    assert same(model, original)
    assert not torch.equal(model2[0].weight, model[0].weight)
    assert set(opt2.last_update) == {"0", "3"}
    with torch.no_grad():
        model(x)
    opt.step()  # the original trains on as before
    assert not same(model, original)


def test_an_optimizer_deep_copied_alone_is_refused_at_copy_time():
    model = net()
    opt = hebbopt.HPCAHebb(model)
    with pytest.raises(TypeError, match=r"copy\.deepcopy\(\(model, optimizer\)\)"):
        copy.deepcopy(opt)
    with pytest.raises(TypeError, match="load_state_dict"):
        copy.deepcopy((opt, model))  # the layers must be copied before the optimizer
    with pytest.raises(TypeError, match="same layers twice"):
        copy.copy(opt)


def test_an_optimizer_unpickled_alone_works_on_its_own_layers():
    model = net()
    opt = hebbopt.HPCAHebb(model, lr=0.1)
    opt2 = _through_pickle(opt)
    layer = opt2.layers["3"]
    assert layer is not model[3] and torch.equal(layer.weight, model[3].weight)
    before = layer.weight.clone()
    with torch.no_grad():
        layer(torch.randn(2, 216))
    with pytest.warns(UserWarning, match=r"\['0'\] captured nothing"):  # only what ran is trained
        opt2.step()
    assert not torch.equal(layer.weight, before)


def test_a_closed_optimizer_stays_closed_when_copied():
    model = net()
    opt = hebbopt.HPCAHebb(model)
    opt.close()
    model2, opt2 = copy.deepcopy((model, opt))
    forward(model2)
    assert all("stats" not in s for s in opt2.state.values())
    hebbopt.SoftWTAHebb(model2)  # its layers are free


# ---------------------------------------------------------------- 16: non-finite new weights
@pytest.mark.parametrize("rule", sorted(RULES))
def test_an_update_that_overflows_the_weights_raises_and_changes_nothing(rule):
    # Finite statistics, but W + lr·ΔW overflows half precision: the new weight is what is checked.
    model = net(torch.float16)
    opt = hebbopt.HebbianOptimizer(model, rule=rule, lr=1e8, compile=False)
    before = weights(model)
    forward(model, torch.float16)
    with pytest.raises(FloatingPointError, match="not finite"):
        opt.step()
    assert same(model, before)
    assert all("stats" not in s for s in opt.state.values())  # discarded
    opt.param_groups[0]["lr"] = 1e-3
    forward(model, torch.float16)
    opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("compile", [False, True])
def test_lr_1e38_raises_instead_of_writing_inf(compile):
    layer = nn.Linear(16, 4)  # compiled: one small layer only (each graph costs seconds on the CPU)
    opt = hebbopt.SoftWTAHebb([layer], lr=1e38, compile=compile)
    before = layer.weight.clone()
    with torch.no_grad():
        layer(10 * torch.randn(8, 16))  # |x| ~ 10: lr·ΔW ~ 1e39 overflows float32
    with pytest.raises(FloatingPointError, match="lr"):
        opt.step()
    assert torch.equal(layer.weight, before)


# ---------------------------------------------------------------- 17: one optimizer per layer
def test_a_second_optimizer_on_the_same_layers_is_refused_until_the_first_is_released():
    model = net()
    first = hebbopt.HPCAHebb(model)
    with pytest.raises(ValueError, match=r"already hooked by another HPCAHebb.*close\(\)"):
        hebbopt.SoftWTAHebb(model)
    with pytest.raises(ValueError, match="'layer0' is already hooked"):
        hebbopt.SoftWTAHebb([model[3]])
    first.close()
    second = hebbopt.SoftWTAHebb(model)
    del second
    gc.collect()
    third = hebbopt.HPCAHebb(model)  # a collected optimizer released its layers
    assert list(third.layers) == ["0", "3"]


def test_two_optimizers_on_different_layers_of_one_model_are_fine():
    model = net()
    a = hebbopt.HPCAHebb(hebbopt.hebbian_layers(model, include=["0"]))
    b = hebbopt.SoftWTAHebb(hebbopt.hebbian_layers(model, include=["3"]))
    forward(model)
    a.step()
    b.step()


# ---------------------------------------------------------------- 18: only the head is the classifier
def test_a_linear_inside_a_transformer_block_is_not_the_classifier():
    encoder = nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoderLayer(16, 2, dim_feedforward=32))
    opt = hebbopt.HPCAHebb(encoder)
    assert list(opt.layers) == ["0", "1.linear1", "1.linear2"]
    text = opt.describe()
    assert "no classifier" in text and "TransformerEncoderLayer" in text
    assert "1.self_attn.out_proj" in opt.skipped
    opt.close()

    classifier = nn.Sequential(*encoder, nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 3)))
    with hebbopt.HPCAHebb(classifier) as opt:
        assert list(opt.layers) == ["0", "1.linear1", "1.linear2"]
        assert "classifier: 2.1 (the last layer with parameters of Sequential), not hooked" in opt.describe()


def test_the_head_of_common_models_is_found():
    class Net(nn.Module):  # a plain module whose last child with weights is its head
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)
            self.act = nn.ReLU()

    assert list(hebbopt.hebbian_layers(Net())) == ["conv"]
    vgg_like = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Flatten(),
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(), nn.Linear(8, 2)),
    )
    assert list(hebbopt.hebbian_layers(vgg_like)) == ["0", "2.0"]
    model = timm.create_model("hebb_alexnet_6l", num_classes=10)
    with hebbopt.HPCAHebb(model) as opt:
        assert "classifier" not in opt.layers
        assert "classifier: classifier (get_classifier() of HebbAlexNet), not hooked" in opt.describe()


def test_pretrained_cfg_names_the_classifier():
    model = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 4), nn.ReLU())
    model.pretrained_cfg = {"classifier": "0"}
    assert list(hebbopt.hebbian_layers(model)) == ["1"]


# ---------------------------------------------------------------- 19: warnings point at the caller
def test_warnings_point_at_the_users_call():
    model = net()
    opt = hebbopt.HPCAHebb(model)
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    assert [w.filename for w in caught] == [__file__]
    model.train()
    forced = hebbopt.HPCAHebb([nn.Linear(3, 3)])
    opt.close()
    silent = hebbopt.HPCAHebb([model[0], model[3]])
    with torch.no_grad():
        model[0](torch.randn(2, 3, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silent.step()
    assert [w.filename for w in caught] == [__file__] and "captured nothing" in str(caught[0].message)
    forced.close()


# ---------------------------------------------------------------- 20: filter grids near square
@pytest.mark.parametrize("channels, filters", [(1, 48), (1, 7), (2, 256), (16, 64), (96, 128)])
def test_filter_grids_are_near_square(channels, filters):
    _, height, width = hebbopt.filter_grid(nn.Conv2d(channels, filters, 5)).shape
    assert 0.5 <= height / width <= 2, (height, width)
