"""The generic rule suite: every rule in ``hebbopt.rules.RULES`` is checked here, with no branch of
its own. A new rule is picked up by registering it.

For each rule and each of its ``examples`` settings: exact against its literal per-sample reference
in float64 (Linear with leading dimensions, Conv2d with stride, padding modes, dilation, 'same'),
over consecutive steps with the rule's state carried by the reference alike, accumulation (k
forwards == one big batch), compile parity with a real recompile count, a state_dict round trip
after steps (bit-identical, dtypes kept), bad hyper-parameters (at construction and hand-edited),
the named class (if any) and the docs. The 2-process sum is in test_distributed.py (one spawn for
all rules). A rule's state goes through ``Rule.reference_step`` and ``optimizer.state``, the same
calls for every rule (``{}`` for a stateless one).
"""

import copy
import dataclasses
import importlib
import pathlib

import pytest
import torch
from helpers import geometry_net, record_inputs, rel_err
from torch import nn
from torch._dynamo.utils import counters

import hebbopt
import hebbopt.rules.geometry
import hebbopt.testing
from hebbopt.named import NAMED
from hebbopt.rules import RULE_MODULES, RULES

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = [(name, ex) for name, rule in RULES.items() for ex in rule.examples]
IDS = [f"{name}-{'-'.join(map(str, ex.values())) or 'defaults'}" for name, ex in CASES]


def reference_step(rule, layer, x, hyper, state=None):
    """``(ΔW, new state)`` of the rule's literal per-sample form; ``state`` defaults to a new layer's."""
    full = RULES[rule].defaults(**hyper)
    if state is None:
        state = RULES[rule].initial_state(layer.weight.detach())
    return RULES[rule].reference_step(layer, x.double(), state, **full)


def rule_state(opt, layer):
    return opt.state[layer.weight].get("rule_state", {})


def assert_states_equal(got: dict, expected: dict, tol: float) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and rel_err(got[key], value) <= tol, key


@pytest.fixture(params=["kernel", "unfolded"])
def conv_patches(request, monkeypatch):
    """Both ways a convolution's ``Σ_b g_b x_bᵀ`` is computed, forced on every layer that allows
    it (the unfolded form needs dilation 1): the weight-gradient kernel, or unfolded patches."""
    unfolded = request.param == "unfolded"
    monkeypatch.setattr(
        hebbopt.rules.geometry, "unfold_pays", lambda g, w, geometry: unfolded and geometry.dilation == (1, 1)
    )
    return request.param


@pytest.mark.parametrize(("rule", "hyper"), CASES, ids=IDS)
def test_exact_against_per_sample_reference_float64(rule, hyper, conv_patches):
    net = geometry_net(torch.float64)
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64)
    opt = hebbopt.HebbianOptimizer(net, rule, lr=1.0, **hyper)
    assert len(opt.layers) == 7
    inputs = record_inputs(net, opt.layers, x)
    before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
    expected = {
        n: reference_step(rule, m, inputs[n], hyper, rule_state(opt, m)) for n, m in opt.layers.items()
    }
    with torch.no_grad():
        net(x)
    opt.step()
    for name, m in opt.layers.items():
        delta, state = expected[name]
        assert delta.abs().max() > 0, name  # the reference moves every layer
        assert rel_err(m.weight.detach() - before[name], delta) < 1e-10, name
        assert_states_equal(rule_state(opt, m), state, 1e-10)


@pytest.mark.parametrize(("rule", "hyper"), CASES, ids=IDS)
def test_consecutive_steps_stay_exact(rule, hyper):
    # From the second step on, a forward may write its statistics into the buffers the previous
    # step applied: every step must still be the reference's (hebbopt.testing, what a user's rule
    # is checked with too). Fresh random network and batches on every run.
    hebbopt.testing.check_exact(RULES[rule], hyper, steps=3, seed=torch.seed() % 2**31)


@pytest.mark.parametrize("rule", RULES)
def test_linear_with_leading_dims_and_unbatched_conv(rule):
    lin = nn.Linear(10, 6).double()
    x = torch.randn(2, 3, 4, 10, dtype=torch.float64)
    opt = hebbopt.HebbianOptimizer(lin, rule, lr=1.0)
    expected, _ = reference_step(rule, lin, x, {})
    w0 = lin.weight.detach().clone()
    lin(x)
    opt.step()
    assert rel_err(lin.weight.detach() - w0, expected) < 1e-10

    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 5, dtype=torch.float64)  # unbatched C×H×W, called by keyword
    opt = hebbopt.HebbianOptimizer([conv], rule, lr=1.0)
    expected, _ = reference_step(rule, conv, x, {})
    w0 = conv.weight.detach().clone()
    conv(input=x)
    opt.step()
    assert rel_err(conv.weight.detach() - w0, expected) < 1e-10


def small_net():
    torch.manual_seed(torch.seed() % 2**31)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 20), nn.ReLU(), nn.Linear(20, 4),
    ).double()  # fmt: skip


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("parts", [2, 3])
def test_micro_batches_equal_one_large_batch(rule, parts):
    hebbopt.testing.check_accumulation(RULES[rule], parts=parts, seed=torch.seed() % 2**31)


def compiled_graphs() -> int:
    """Graphs dynamo has compiled since ``counters.clear()``: a recompile adds one."""
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("rule", RULES)
def test_compiled_equals_eager_and_never_recompiles(rule):
    counters.clear()
    torch.manual_seed(torch.seed() % 2**31)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    twin = copy.deepcopy(conv)
    compiled = hebbopt.HebbianOptimizer([conv], rule, lr=0.3, compile=True)
    eager = hebbopt.HebbianOptimizer([twin], rule, lr=0.3, compile=False)
    graphs = None
    for step in range(4):
        x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
        conv(x)
        twin(x)
        compiled.step()
        eager.step()
        if step == 0:
            graphs = compiled_graphs()  # the statistics and the update, compiled by the first step
        compiled.param_groups[0]["lr"] = eager.param_groups[0]["lr"] = 0.3 / (step + 2)  # a scheduler
    assert graphs > 0, "nothing was compiled"
    assert compiled_graphs() == graphs, "a stable shape recompiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert rel_err(conv.weight, twin.weight) < 1e-12
    assert_states_equal(rule_state(compiled, conv), rule_state(eager, twin), 1e-12)


def test_the_recompile_count_sees_a_forced_recompile():
    # The count the test above relies on can fail: a new batch size is a new statistics graph
    # (statistics compile per shape), and the count shows it.
    counters.clear()
    layer = nn.Linear(6, 4).double()
    opt = hebbopt.HebbianOptimizer([layer], "oja", lr=0.1, compile=True)

    def step(rows):
        layer(torch.randn(rows, 6, dtype=torch.float64))
        opt.step()

    step(5)
    graphs = compiled_graphs()
    step(5)
    assert compiled_graphs() == graphs
    step(7)
    assert compiled_graphs() > graphs, "a forced recompile went uncounted"


def assert_same_state(opt_a, opt_b):
    """The two optimizers' states are the same, bit for bit, dtype and device included."""
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for index in sa:
        flat_a, flat_b = _flatten(sa[index]), _flatten(sb[index])
        assert flat_a.keys() == flat_b.keys(), index
        for key, va in flat_a.items():
            vb = flat_b[key]
            if isinstance(va, torch.Tensor):
                assert (va.dtype, va.device) == (vb.dtype, vb.device) and torch.equal(va, vb), key
            else:
                assert va == vb, key


def _flatten(entry: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


@pytest.mark.parametrize("rule", RULES)
def test_state_dict_round_trip_after_steps_resumes_bit_identically(rule):
    hebbopt.testing.check_round_trip(RULES[rule], seed=torch.seed() % 2**31)


@pytest.mark.parametrize("rule", RULES)
def test_state_keeps_its_dtype_through_a_round_trip_of_a_bfloat16_model(rule):
    # torch.optim casts floating state to the weight's dtype on load; the statistics and any rule
    # state (float32 for a bf16 layer) must come back as they were saved.
    torch.manual_seed(torch.seed() % 2**31)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).to(torch.bfloat16)
    opt = hebbopt.HebbianOptimizer(net, rule, lr=0.01)
    for _ in range(2):
        with torch.no_grad():
            net(torch.randn(7, 6, dtype=torch.bfloat16))
        opt.step()
    with torch.no_grad():
        net(torch.randn(7, 6, dtype=torch.bfloat16))
    twin = copy.deepcopy(net)
    loaded = hebbopt.HebbianOptimizer(twin, rule, lr=0.01)
    loaded.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert_same_state(opt, loaded)


@pytest.mark.parametrize("rule", [r for r in RULES if RULES[r].hyper])
def test_bad_hyper_parameters_are_refused_and_change_nothing(rule):
    for key, h in RULES[rule].hyper.items():
        for bad in h.check.invalid:
            model = small_net()
            with pytest.raises(ValueError, match=f"invalid {key}"):
                hebbopt.HebbianOptimizer(model, rule, **{key: bad})
            assert all(len(m._forward_hooks) == 0 for m in model.modules())

            opt = hebbopt.HebbianOptimizer(model, rule, lr=0.5)
            ref = copy.deepcopy(model)
            with torch.no_grad():
                model(torch.randn(2, 3, 10, 10, dtype=torch.float64))
            opt.param_groups[0][key] = bad  # edited by hand, e.g. by a scheduler
            with pytest.raises(ValueError, match=f"invalid {key}"):
                opt.step()
            with pytest.raises(ValueError, match=f"invalid {key}"), torch.no_grad():
                model(torch.randn(2, 3, 10, 10, dtype=torch.float64))
            for pa, pb in zip(model.parameters(), ref.parameters(), strict=True):
                assert torch.equal(pa, pb)


def test_unknown_rule_and_unknown_hyper_parameter():
    with pytest.raises(ValueError, match="unknown rule 'nope'"):
        hebbopt.HebbianOptimizer(small_net(), "nope")
    with pytest.raises(TypeError, match="no hyper-parameter"):
        hebbopt.HebbianOptimizer(small_net(), "hpca", temperature=1.0)
    with pytest.raises(TypeError, match="not hyper-parameters"):
        hebbopt.HebbianOptimizer([{"modules": small_net(), "temprature": 0.1}], "swta")


def test_winners_take_only_what_statistics_takes():
    swta = RULES["swta"]

    def winners(x, u, weight, geometry, *, temperature, margin):
        return u.argmax(dim=1)

    with pytest.raises(ValueError, match=r"winners takes \['margin'\], which statistics does not"):
        dataclasses.replace(swta, winners=winners)
    assert dataclasses.replace(swta, winners=None).winners_hyper == ()


def test_every_shipped_rule_has_a_named_class():
    shipped = [importlib.import_module(f"hebbopt.rules.{m}").RULE.name for m in RULE_MODULES]
    assert sorted(NAMED) == sorted(shipped)


@pytest.mark.parametrize("rule", NAMED)
def test_named_class_is_the_rule_with_its_own_defaults(rule):
    opt = NAMED[rule](small_net(), lr=0.1)
    assert opt.rule is RULES[rule] and type(opt).__name__ in hebbopt.__all__
    group = opt.param_groups[0]
    assert {k: group[k] for k in RULES[rule].hyper} == RULES[rule].defaults() and group["lr"] == 0.1
    for example in RULES[rule].examples:  # every hyper-parameter by keyword, as the rule takes it
        group = NAMED[rule](small_net(), lr=0.2, **example).param_groups[0]
        assert {k: group[k] for k in example} == example
    with pytest.raises(TypeError, match="no hyper-parameter"):
        NAMED[rule](small_net(), lr=0.1, not_a_hyper=1.0)


@pytest.mark.parametrize("rule", RULES)
def test_rule_is_documented(rule):
    rules_page = (ROOT / "docs" / "rules.md").read_text()
    assert f'rule="{rule}"' in rules_page or f"`{rule}`" in rules_page
    api = (ROOT / "docs" / "api" / "rules.md").read_text()
    assert f"::: {RULES[rule].statistics.__module__}" in api


@pytest.mark.parametrize("rule", RULES)
def test_a_non_finite_step_leaves_weights_and_state_as_they_were(rule):
    hebbopt.testing.check_non_finite(RULES[rule], seed=torch.seed() % 2**31)


def test_check_rule_names_the_rule_the_check_and_the_layer_that_differ():
    oja = RULES["oja"]
    off = dataclasses.replace(
        oja, name="oja_off", reference=lambda layer, x, **h: 1.01 * oja.reference(layer, x, **h)
    )
    with pytest.raises(
        AssertionError, match=r"rule 'oja_off', exact: step 1, layer 0: relative error 9\.9e-03"
    ):
        hebbopt.testing.check_rule(off, compile=False)
    no_reference = dataclasses.replace(oja, name="oja_unreferenced", reference=None)
    hebbopt.testing.check_rule(no_reference, compile=False)  # the other checks still run, and pass
    with pytest.raises(ValueError, match="no reference"):
        hebbopt.testing.check_exact(no_reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(37, 19), (64, 300), (4, 19, 5, 7), (2, 96, 9, 9), "channels_last"])
def test_winner_is_argmax_with_ties_and_nan(dtype, shape):
    """The rules' winner (``max(dim=1).indices``, faster on the CPU) is ``argmax``'s: the first of
    tied maxima, and a NaN wins, on maps with many ties."""
    cl = shape == "channels_last"
    for trial in range(4):
        t = torch.randint(-2, 3, (3, 40, 6, 6) if cl else shape).to(dtype)  # few values: many ties
        if trial % 2:
            t.view(-1)[torch.randperm(t.numel())[:7]] = float("nan")
        if cl:
            t = t.contiguous(memory_format=torch.channels_last)
        assert torch.equal(hebbopt.rules.geometry.winner(t), t.argmax(dim=1))
        assert torch.equal(hebbopt.rules.geometry.winner(t, keepdim=True), t.argmax(dim=1, keepdim=True))


@pytest.mark.parametrize("name", ["softhebb", "swta", "krotov"])
def test_rule_winners_pick_the_first_of_tied_neurons(name):
    rule = RULES[name]
    hyper = rule.examples[0]
    weight = torch.ones(5, 3, dtype=torch.float64)  # every neuron alike: all tie at every sample
    x = torch.randn(8, 3, dtype=torch.float64)
    kwargs = {k: hyper[k] for k in rule.winners_hyper if k in hyper}
    won = rule.winners(x, x @ weight.T, weight, None, **kwargs)
    assert torch.equal(won, torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize(("rule", "hyper"), CASES, ids=IDS)
def test_rules_that_say_they_read_no_weight_values_read_none(rule, hyper):
    hebbopt.testing.check_reads_weight(RULES[rule], hyper, seed=torch.seed() % 2**31)


def test_the_reads_weight_check_catches_a_rule_that_reads_them():
    wrong = dataclasses.replace(RULES["hpca"], name="hpca_blind", reads_weight=False)  # tril(YᵀY)W reads W
    with pytest.raises(hebbopt.testing.ConformanceError, match="reads-weight"):
        hebbopt.testing.check_reads_weight(wrong)


def test_bf16_statistics_skip_the_weight_cast_with_the_same_step(monkeypatch):
    """With statistics in bfloat16, SoftHebb's statistics get a stand-in of the weight's shape and
    dtype (no cast of the weight per step) and the step is the one the cast weight gives."""
    rule = RULES["softhebb"]
    strides = []
    real = rule.statistics

    def spy(x, u, weight, geometry, *, temperature, out=None):
        strides.append(weight.stride())
        return real(x, u, weight, geometry, temperature=temperature, out=out)

    base = torch.nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    x = torch.randn(4, 3, 8, 8)
    weights = []
    for reads in (False, True):
        net = copy.deepcopy(base)
        variant = dataclasses.replace(rule, name=f"softhebb_spy_{reads}", statistics=spy, reads_weight=reads)
        opt = hebbopt.HebbianOptimizer(
            net, variant, lr=0.05, statistics_dtype=torch.bfloat16, temperature=0.5
        )
        with torch.no_grad():
            net(x)
        opt.step()
        opt.close()
        weights.append([p.detach().clone() for p in net.parameters()])
    assert len(strides) == 2 and 0 in strides[0] and 0 not in strides[1]  # a stand-in, then the cast weight
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
