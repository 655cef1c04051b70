"""SWTA/HPCA specifics beyond the generic rule suite (tests/test_rules.py): float32, the HPCA
prefix form, the unfold formulation, the fused apply_, channels-last."""

import pathlib

import pytest
import torch
from helpers import geometry_net, record_inputs, reference_delta, rel_err
from torch import nn

import hebbopt
import hebbopt.rules.geometry
from hebbopt.rules import Conv2dGeometry, hpca, swta

CASES = [
    ("swta", {"temperature": 0.02, "similarity": "raised_cos2"}),
    ("swta", {"temperature": 0.7, "similarity": "dot"}),
    ("hpca", {"activation": "relu"}),
    ("hpca", {"activation": "identity"}),
]


def make_optimizer(rule, net, hyper, **kw):
    cls = hebbopt.SoftWTAHebb if rule == "swta" else hebbopt.HPCAHebb
    return cls(net, lr=1.0, **hyper, **kw)


def ref_hyper(rule, hyper):
    return hyper if rule == "swta" else {"activation": hyper["activation"]}


def check_step_matches_reference(rule, hyper, net, x, tol, compile=False):
    opt = make_optimizer(rule, net, hyper, compile=compile)
    inputs = record_inputs(net, opt.layers, x)
    before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
    expected = {
        n: reference_delta(rule, m, inputs[n].double(), **ref_hyper(rule, hyper))
        for n, m in opt.layers.items()
    }
    with torch.no_grad():
        net(x)
    opt.step()
    opt.close()
    assert len(opt.layers) == 7
    for name, m in opt.layers.items():
        got = m.weight.detach().double() - before[name].double()
        assert rel_err(got, expected[name]) < tol, name


@pytest.mark.parametrize(("rule", "hyper"), [CASES[0], CASES[2]])
def test_step_equals_per_sample_reference_float32(rule, hyper):
    net = geometry_net(torch.float32)
    x = torch.randn(3, 3, 13, 11)
    check_step_matches_reference(rule, hyper, net, x, 1e-4)


@pytest.mark.parametrize(("m", "n", "s"), [(7, 300, 20), (5, 130, 3), (64, 96, 75)])
def test_hpca_prefix_form_equals_gram_form_and_literal_sum(m, n, s):
    y = torch.randn(m, n, dtype=torch.float64)
    x = torch.randn(m, s, dtype=torch.float64)
    w = torch.randn(n, s, dtype=torch.float64)
    recon = torch.tril(hpca.gram(y)) @ w
    # The paper's literal sum Σ_b y_bn Σ_{n'≤n} y_bn' w_n'.
    literal = (y[:, :, None] * torch.cumsum(y[:, :, None] * w[None], dim=1)).sum(0)
    assert rel_err(recon, literal) < 1e-12
    assert rel_err(hpca.hebbian_term(y, x, w), y.T @ x - literal) < 1e-12
    assert rel_err(hpca.hebbian_term(y, None, w), -literal) < 1e-12
    maps = torch.randn(2, n, 3, 5, dtype=torch.float64)  # gram of a B×N×H×W map = of its rows
    rows = maps.movedim(1, -1).reshape(-1, n)
    assert rel_err(hpca.gram(maps), rows.T @ rows) < 1e-12


def test_prefix_form_chosen_when_batch_smaller_than_neurons():
    assert hpca.prefix_is_cheaper(64, 4096, 2304)  # the paper's fc5 at batch 64
    assert not hpca.prefix_is_cheaper(64 * 28 * 28, 96, 75)  # conv1: the Gram form


def test_unfold_formulation_equals_per_sample():
    # The benchmark's "unfold" baseline (benchmarks/unfold.py) computes what the rules' references do.
    import importlib.util

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "unfold.py"
    spec = importlib.util.spec_from_file_location("unfold", path)
    unfold = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unfold)
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert rel_err(unfold.swta_update_unfold(conv, x), swta.reference(conv, x)) < 1e-12
    assert rel_err(unfold.hpca_update_unfold(conv, x), hpca.reference(conv, x)) < 1e-12


@pytest.mark.parametrize(
    ("layer", "x_shape", "mns"),
    [
        (nn.Linear(20, 300), (6, 20), (6, 300, 20)),
        (nn.Conv2d(3, 200, 3, padding=1), (2, 3, 2, 2), (8, 200, 27)),
    ],
    ids=["linear", "conv"],
)
def test_hpca_prefix_path_end_to_end(layer, x_shape, mns):
    assert hpca.prefix_is_cheaper(*mns)  # fewer samples than neurons: the blocked prefix form
    layer = layer.double()
    x = torch.randn(x_shape, dtype=torch.float64)
    opt = hebbopt.HPCAHebb([layer], lr=1.0)
    expected = reference_delta("hpca", layer, x)
    w0 = layer.weight.detach().clone()
    layer(x)
    opt.step()
    assert rel_err(layer.weight.detach() - w0, expected) < 1e-10


@pytest.mark.parametrize("rule", ["swta", "hpca"])
def test_fused_apply_equals_w_plus_lr_update(rule):
    mod = swta if rule == "swta" else hpca
    conv = nn.Conv2d(3, 8, 3).double()
    x = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    w = conv.weight.detach().clone()
    hyper = {"temperature": 0.1} if rule == "swta" else {}
    stats = mod.statistics(
        x, conv(x) - conv.bias.view(1, -1, 1, 1), w, Conv2dGeometry((1, 1), (0, 0), (1, 1)), **hyper
    )
    expected = w + 0.3 * mod.update(stats, w)
    mod.apply_(w, stats, torch.tensor(0.3, dtype=torch.float64))
    assert rel_err(w, expected) < 1e-13


@pytest.mark.parametrize(("rule", "hyper"), [CASES[0], CASES[2]])
def test_channels_last_model(rule, hyper):
    net = geometry_net(torch.float64).to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    check_step_matches_reference(rule, hyper, net, x, 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["rows", "nchw", "channels_last"])
def test_softmax_over_its_own_buffer_equals_torch_softmax(dtype, layout):
    shape = (37, 19) if layout == "rows" else (3, 19, 5, 7)
    s = (torch.randn(shape, dtype=torch.float64) * 30).to(dtype)  # large: the maximum matters
    if layout == "channels_last":
        s = s.contiguous(memory_format=torch.channels_last)
    expected = torch.softmax(s.double(), dim=1)
    r = swta.softmax_neurons_(s)
    assert r.data_ptr() == s.data_ptr() and r.stride() == s.stride()  # written over, on the CPU
    tol = {torch.float32: 1e-6, torch.float64: 1e-14, torch.bfloat16: 1e-2}[dtype]
    assert (r.double() - expected).abs().max() < tol
    with torch.no_grad():  # and the out-of-place form agrees
        fresh = (torch.randn(shape, dtype=torch.float64) * 30).to(dtype)
    assert torch.equal(swta.softmax_neurons(fresh), swta.softmax_neurons_(fresh.clone()))


def _subnormal(t: torch.Tensor) -> torch.Tensor:
    return (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["rows", "nchw", "channels_last"])
def test_softmax_sets_subnormal_coefficients_to_zero(dtype, layout):
    shape = (37, 19) if layout == "rows" else (3, 19, 5, 7)
    s = (torch.rand(shape, dtype=torch.float64) * 200 - 100).to(dtype)  # e^-100 ≈ 4e-44 underflows
    if layout == "channels_last":
        s = s.contiguous(memory_format=torch.channels_last)
    plain = torch.softmax(s, dim=1)
    assert _subnormal(plain).any()  # the input does produce subnormal coefficients
    tol = {torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    for r in (swta.softmax_neurons(s), swta.softmax_neurons_(s.clone())):
        assert not _subnormal(r).any()
        # each coefficient moved by at most the smallest normal number (or rounding elsewhere)
        bound = tol * plain.double().abs() + torch.finfo(dtype).tiny
        assert ((r.double() - plain.double()).abs() <= bound).all()


SOFTMAX_RULES = [("swta", {"temperature": 0.01}), ("softhebb", {"temperature": 0.02})]


@pytest.mark.parametrize(("rule", "hyper"), SOFTMAX_RULES)
def test_softmax_rules_hand_no_subnormal_coefficient_to_their_products(rule, hyper, monkeypatch):
    """Subnormal floats make the CPU's products 10-100x slower: the coefficients a softmax rule
    passes to its Σ g xᵀ (for SWTA r², whose small entries underflow where r's do not) hold none,
    and the statistics stay those of the float64 computation to float32 precision."""
    module = {"swta": swta, "softhebb": hebbopt.rules.softhebb}[rule]
    seen = []
    real = module.patch_sum
    monkeypatch.setattr(module, "patch_sum", lambda g, *a, **k: seen.append(g.clone()) or real(g, *a, **k))
    conv = nn.Conv2d(4, 64, 3, bias=False)
    x = torch.randn(6, 4, 9, 9)
    geometry = Conv2dGeometry((1, 1), (0, 0), (1, 1))
    stats = module.statistics(x, conv(x).detach(), conv.weight.detach(), geometry, **hyper)
    (g,) = seen
    assert not _subnormal(g).any()
    conv.double()
    exact = module.statistics(x.double(), conv(x.double()).detach(), conv.weight.detach(), geometry, **hyper)
    for key, value in stats.items():
        assert (value.double() - exact[key]).abs().max() <= 1e-4 * exact[key].abs().max(), key


def test_next_forward_writes_into_the_statistics_the_step_applied():
    lin = nn.Linear(12, 7).double()
    opt = hebbopt.SoftWTAHebb(lin, lr=0.5, temperature=0.3)
    lin(torch.randn(5, 12, dtype=torch.float64))
    applied = opt.state[lin.weight]["stats"]["r2x"]
    opt.step()
    x = torch.randn(6, 12, dtype=torch.float64)
    lin(x)
    again = opt.state[lin.weight]["stats"]["r2x"]
    assert again.data_ptr() == applied.data_ptr()  # no fresh N×S buffer
    w = lin.weight.detach()
    cos = (x @ w.T) / (x.norm(dim=1, keepdim=True) * w.norm(dim=1))
    r = torch.softmax(((1 + cos) / 2) ** 2 / 0.3, dim=1)
    assert rel_err(again, (r * r).T @ x) < 1e-13
    opt.step()
    opt.close()  # the spare buffers go with the hooks
    assert not opt._spare


def test_hpca_prefix_form_writes_into_the_statistics_the_step_applied():
    # A Linear layer with more neurons than samples takes the blocked prefix form (B < N): its N×S
    # result goes into the buffer the last step applied, not a fresh one, and stays exact.
    net = nn.Sequential(nn.Linear(9, 150, bias=False), nn.ReLU(), nn.Linear(150, 2)).double()
    lin = net[0]
    opt = hebbopt.HPCAHebb(net, lr=0.1)
    net(torch.randn(4, 9, dtype=torch.float64))
    applied = opt.state[lin.weight]["stats"]["hebb"]
    opt.step()
    x = torch.randn(5, 9, dtype=torch.float64)
    w = lin.weight.detach().clone()
    net(x)
    again = opt.state[lin.weight]["stats"]["hebb"]
    assert again.data_ptr() == applied.data_ptr()  # no fresh N×S buffer
    y = torch.relu(x @ w.T)
    assert rel_err(again, y.T @ x - torch.tril(y.T @ y) @ w) < 1e-12
    opt.close()


@pytest.mark.parametrize("channels_last", [False, True])
def test_unfolded_patch_sum_equals_literal_sum_over_patches(channels_last):
    # Random geometries (stride, padding, non-square kernels), and chunk budgets from one image per
    # chunk to all images in one: against the literal Σ_b g_b x_bᵀ over F.unfold's patches.
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    for _ in range(6):
        kh, kw, sh, sw, ph, pw = (int(v) for v in torch.randint(1, 4, (6,), generator=gen))
        ph, pw = ph - 1, pw - 1
        b, c, n = (int(v) for v in torch.randint(1, 6, (3,), generator=gen))
        h, w = (k + int(torch.randint(0, 6, (1,), generator=gen)) for k in (kh, kw))
        x = torch.randn(b, c, h, w, dtype=torch.float64, generator=gen)
        weight = torch.empty(n, c, kh, kw, dtype=torch.float64)
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        g = torch.randn(b, n, oh, ow, dtype=torch.float64, generator=gen)
        if channels_last:
            x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
        cols = nn.functional.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # B×S×positions
        literal = torch.einsum("bnp,bsp->ns", g.flatten(2), cols).reshape(n, c, kh, kw)
        geometry = Conv2dGeometry((sh, sw), (ph, pw), (1, 1))
        for budget in (1, c * kh * kw * oh * ow * 2, 2**23):
            got = hebbopt.rules.geometry.unfolded_patch_sum(g, x, weight, geometry, budget=budget)
            assert got.shape == weight.shape and rel_err(got, literal) < 1e-12


def test_patch_sum_unfolds_small_maps_on_the_cpu_only(monkeypatch):
    # The fixed rule: at most 4 positions, or at most 64 with at least 1024 neurons; never with
    # dilation; and patch_sum takes that path (its result then equals the kernel's).
    pays = hebbopt.rules.geometry.unfold_pays
    plain, dilated = Conv2dGeometry((1, 1), (1, 1), (1, 1)), Conv2dGeometry((1, 1), (2, 2), (2, 2))
    cases = {((2, 2), 8): True, ((1, 4), 8): True, ((1, 5), 8): False, ((8, 8), 1024): True}
    cases |= {((8, 8), 1023): False, ((9, 8), 1024): False}
    for (hw, n), expected in cases.items():
        assert pays(torch.empty(2, n, *hw), torch.empty(n, 3, 3, 3), plain) is expected, (hw, n)
    assert not pays(torch.empty(2, 8, 2, 2), torch.empty(8, 3, 3, 3), dilated)
    assert not pays(torch.empty(2, 8, 2, 2, device="meta"), torch.empty(8, 3, 3, 3, device="meta"), plain)
    x, g = torch.randn(3, 4, 2, 2, dtype=torch.float64), torch.randn(3, 6, 2, 2, dtype=torch.float64)
    weight = torch.empty(6, 4, 3, 3, dtype=torch.float64)
    calls = []
    original = hebbopt.rules.geometry.unfolded_patch_sum
    monkeypatch.setattr(
        hebbopt.rules.geometry, "unfolded_patch_sum", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    got = hebbopt.rules.geometry.patch_sum(g, x, weight, plain)
    kernel = torch.ops.aten.convolution_backward(
        g, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]
    assert calls == [1] and rel_err(got, kernel) < 1e-12
