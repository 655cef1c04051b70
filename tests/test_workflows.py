"""Hooks and optimizers survive ordinary torch workflows: copies, pickles, schedulers, dtypes,
several groups, odd layers, keyword calls, and state from another optimizer."""

import copy
import io
import warnings

import numpy as np
import pytest
import torch
from helpers import record_inputs, rel_err
from torch import nn

import hebbopt
from hebbopt.rules import RULES
from hebbopt.rules.geometry import patches


def net():
    torch.manual_seed(torch.seed() % 2**31)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5), nn.Linear(5, 2)
    )


def forward(model, n=3):
    with torch.no_grad():
        model(torch.randn(n, 3, 6, 6))


def test_deepcopy_of_a_hooked_model_is_plain():
    model = net()
    opt = hebbopt.HPCAHebb(model, lr=0.1)
    twin = copy.deepcopy(model)
    before = copy.deepcopy(model.state_dict())
    forward(twin)
    assert all("stats" not in s for s in opt.state.values())  # the copy fed nobody
    opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # ... so the original did not move
    assert all(len(m._forward_hooks) == 0 for m in twin.modules())  # hooks gone after one call
    forward(model)
    opt.step()
    assert not torch.equal(model[0].weight, before["0.weight"])  # the original still trains


def test_torch_save_of_a_hooked_model_and_after_the_optimizer_is_dropped():
    model = net()
    opt = hebbopt.SoftWTAHebb(model, lr=0.1)
    buf = io.BytesIO()
    torch.save(model, buf)  # while hooked
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    forward(loaded)
    assert all(len(m._forward_hooks) == 0 for m in loaded.modules())
    del opt  # dropped without close(): its hooks unhook themselves on the next forward
    torch.save(model, io.BytesIO())
    forward(model)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize("lr", [torch.tensor(0.3), np.float32(0.3), np.float64(0.3)])
def test_lr_as_tensor_or_numpy_scalar(lr):
    a, b = net(), None
    b = copy.deepcopy(a)
    opt_a, opt_b = hebbopt.HPCAHebb(a, lr=lr), hebbopt.HPCAHebb(b, lr=0.3)
    x = torch.randn(3, 3, 6, 6)
    for m, opt in ((a, opt_a), (b, opt_b)):
        with torch.no_grad():
            m(x)
        opt.step()
    assert rel_err(a[0].weight, b[0].weight) < 1e-6


def test_lambda_lr_returning_numpy_values():
    model = net()
    opt = hebbopt.SoftHebb(model, lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: np.float32(1 - 0.25 * epoch))
    w0 = model[0].weight.detach().clone()
    for _ in range(3):
        forward(model)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    assert not torch.equal(model[0].weight, w0)


def test_bf16_pending_statistics_keep_float32_through_state_dict():
    model = net().to(torch.bfloat16)
    opt = hebbopt.HPCAHebb(model, lr=0.1)
    with torch.no_grad():
        model(torch.randn(3, 3, 6, 6, dtype=torch.bfloat16))
    twin = copy.deepcopy(model)
    opt2 = hebbopt.HPCAHebb(twin, lr=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    stats = opt2.state[twin[0].weight]["stats"]
    assert stats["hebb"].dtype == torch.float32
    assert torch.equal(stats["hebb"], opt.state[model[0].weight]["stats"]["hebb"])
    opt.step()
    opt2.step()
    assert torch.equal(model[0].weight, twin[0].weight)


def test_groups_from_two_submodules_get_unique_names():
    a, b = net(), net()
    opt = hebbopt.HPCAHebb(
        [{"modules": hebbopt.hebbian_layers(a)}, {"modules": hebbopt.hebbian_layers(b), "lr": 0.5}]
    )
    assert list(opt.layers) == ["0", "3", "group1.0", "group1.3"]
    assert len(opt.describe().splitlines()) == 5


def test_skipped_layers_are_listed_and_explicit_ones_refused():
    model = nn.Sequential(
        nn.Conv1d(3, 3, 1), nn.Flatten(0, -1), nn.Unflatten(0, (1, 3, 6, 6)), nn.Conv2d(3, 4, 3, groups=1),
        nn.Conv2d(4, 4, 1, groups=2), nn.Flatten(), nn.Linear(64, 2),
    )  # fmt: skip
    opt = hebbopt.HPCAHebb(model)
    assert list(opt.layers) == ["3"]
    assert set(opt.skipped) == {"0", "4"}
    text = opt.describe()
    assert "skipped 0: Conv1d" in text and "skipped 4: groups=2" in text
    with pytest.raises(ValueError, match="groups=2"):
        hebbopt.HPCAHebb([model[4]])


def test_string_patterns_are_refused():
    with pytest.raises(TypeError, match=r"list of patterns.*\['0'\]"):
        hebbopt.hebbian_layers(net(), include="0")
    with pytest.raises(TypeError, match="list of patterns"):
        hebbopt.hebbian_layers(net(), exclude="3")


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x)
        return self.head(self.mha(h, h, h)[0])


def test_attention_out_proj_is_skipped_and_a_silent_layer_is_warned_about():
    model = Attention()
    opt = hebbopt.HPCAHebb(model)
    assert list(opt.layers) == ["inp"]
    assert "F.linear" in opt.skipped["mha.out_proj"]
    opt.close()  # one Hebbian optimizer per layer
    forced = hebbopt.HPCAHebb([model.inp, model.mha.out_proj])  # named explicitly: hooked
    with torch.no_grad():
        model(torch.randn(2, 5, 8))
    with pytest.warns(UserWarning, match=r"\['layer1'\] captured nothing"):
        forced.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(torch.randn(2, 5, 8))
        forced.step()  # once only


def test_step_with_the_model_in_eval_mode_warns_once():
    model = net()
    opt = hebbopt.HPCAHebb(model)
    model.eval()
    forward(model)
    with pytest.warns(UserWarning, match="eval mode"):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


def test_state_of_another_rule_or_other_layers_is_refused():
    model = net()
    hpca = hebbopt.HPCAHebb(model)
    forward(model)
    state = hpca.state_dict()
    hpca.close()
    swta = hebbopt.SoftWTAHebb(model)
    with pytest.raises(ValueError, match=r"holds rule \['hpca'\] but this optimizer runs rule 'swta'"):
        swta.load_state_dict(state)
    swta.close()
    fewer = hebbopt.HPCAHebb(hebbopt.hebbian_layers(model, exclude=["3"]))
    with pytest.raises(ValueError, match=r"layers \[\['0', '3'\]\] but this optimizer hooks \[\['0'\]\]"):
        fewer.load_state_dict(state)
    assert all("stats" not in s for s in fewer.state.values())


@pytest.mark.parametrize("rule", RULES)
def test_diagnostics_record_the_relative_update(rule):
    model = net().double()
    opt = hebbopt.HebbianOptimizer(model, rule, lr=0.05, diagnostics=True)
    before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
    with torch.no_grad():
        model(torch.randn(3, 3, 6, 6, dtype=torch.float64))
    opt.step()
    for name, m in opt.layers.items():
        delta = m.weight.detach() - before[name]
        got = opt.last_update[name]
        assert float(got["update"]) == pytest.approx(float(delta.abs().max() / before[name].abs().max()))
        assert float(got["norm"]) == pytest.approx(float(m.weight.detach().flatten(1).norm(dim=1).mean()))


def swta_similarity(xp, w, h):
    if h["similarity"] == "dot":
        return xp @ w.T
    cos = (xp @ w.T) / xp.norm(dim=1, keepdim=True) / w.norm(dim=1)
    return ((1 + cos) / 2) ** 2


# What each competitive rule ranks, per sample (rows of unfolded patches xp, weight rows w), as its
# paper writes it: the winner is the argmax over neurons.
RANKED = {
    "swta": swta_similarity,
    "softhebb": lambda xp, w, h: xp @ w.T,
    "krotov": lambda xp, w, h: xp @ (w.sign() * w.abs() ** (h["p"] - 1)).T,
}
COMPETITIVE = [(name, ex) for name, rule in RULES.items() if rule.winners is not None for ex in rule.examples]


def test_the_competitive_rules_are_those_with_winners():
    assert {name for name, _ in COMPETITIVE} == set(RANKED) == {"swta", "softhebb", "krotov"}


def wide_net():
    """More neurons than samples per layer, so that some neurons never win; neuron norms spread
    over 0.1-10×, so that ranking by w·x and by cos(w, x) differ."""
    torch.manual_seed(torch.seed() % 2**31)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 2 * 2, 40), nn.ReLU(),
        nn.Linear(40, 2),
    ).double()  # fmt: skip
    with torch.no_grad():
        for m in (model[0], model[3]):
            n = m.weight.shape[0]
            scale = torch.logspace(-1, 1, n, dtype=torch.float64)[torch.randperm(n)]
            m.weight.mul_(scale.view(n, *[1] * (m.weight.dim() - 1)))
    return model


@pytest.mark.parametrize(
    ("rule", "hyper"),
    COMPETITIVE,
    ids=[f"{r}-{'-'.join(map(str, ex.values())) or 'defaults'}" for r, ex in COMPETITIVE],
)
def test_ever_won_is_the_fraction_of_neurons_that_won_a_sample(rule, hyper):
    model = wide_net()
    opt = hebbopt.HebbianOptimizer(model, rule, lr=0.05, diagnostics=True, **hyper)
    full = RULES[rule].defaults(**hyper)
    won = {name: set() for name in opt.layers}
    for forwards in (2, 1):  # two forwards before the first step, one before the second
        batches = [torch.randn(2, 3, 5, 5, dtype=torch.float64) for _ in range(forwards)]
        inputs = record_inputs(model, opt.layers, *batches)  # the same inputs, captured apart
        for name, m in opt.layers.items():
            w = m.weight.detach().flatten(1)
            won[name] |= set(RANKED[rule](patches(m, inputs[name]), w, full).argmax(dim=1).tolist())
        with torch.no_grad():
            for x in batches:
                model(x)
        opt.step()
        for name, m in opt.layers.items():
            expected = len(won[name]) / m.weight.shape[0]
            assert 0 < expected < 1, name  # 24 and 6 samples for 32 and 40 neurons
            assert float(opt.last_update[name]["ever_won"]) == pytest.approx(expected), name
    # kept in the optimizer's state: a state_dict round trip carries it, as booleans
    twin = hebbopt.HebbianOptimizer(copy.deepcopy(model), rule, lr=0.05, **hyper)
    twin.load_state_dict(opt.state_dict())
    for p, q in zip(opt.param_groups[0]["params"], twin.param_groups[0]["params"], strict=True):
        loaded = twin.state[q]["won"]
        assert loaded.dtype == torch.bool and torch.equal(loaded, opt.state[p]["won"])


@pytest.mark.parametrize("rule", RULES)
def test_ever_won_only_for_competitive_rules_and_only_with_diagnostics(rule):
    model = net()
    quiet = hebbopt.HebbianOptimizer(model, rule, lr=0.05)
    forward(model)
    quiet.step()
    assert quiet.last_update == {} and all("won" not in s for s in quiet.state.values())  # no extra work
    quiet.close()
    opt = hebbopt.HebbianOptimizer(model, rule, lr=0.05, diagnostics=True)
    forward(model)
    opt.step()
    competitive = RULES[rule].winners is not None
    assert all(("won" in s) == competitive for s in opt.state.values())
    assert all(("ever_won" in d) == competitive for d in opt.last_update.values())
    assert set(opt.last_update) == set(opt.layers)
