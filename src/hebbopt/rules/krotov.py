r"""Krotov–Hopfield (Krotov & Hopfield, PNAS 2019, "Unsupervised learning by competing hidden units").

Per sample ``b`` (an image, or a patch position) the currents of the neurons are

    I_bn = (sign(W) ⊙ |W|^(p−1))_n · x_b

(for p = 2 simply ``u_bn = w_n · x_b``). The top-ranked neuron by ``I`` gets ``g = 1``, the k-th
ranked ``g = −Δ`` (delta), the others 0. Summed over the batch:

    D_n = Σ_b g_bn x_b − (Σ_b g_bn I_bn) w_n,      ΔW = D / max(max|D|, 1e-30)

Sufficient statistics: ``Σ_b g_b x_bᵀ`` (a convolution weight-gradient for Conv2d, no unfolding)
and ``Σ_b g_b I_b`` (N); the normalisation acts on the sums at ``step()``. The paper's ε and its
linear annealing are the learning rate and a scheduler (``LambdaLR``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hebbopt.rules.base import Hyper, Rule, integer, number
from hebbopt.rules.geometry import Geometry, patch_sum, patches, sample_dims, weight_view, winner


def currents(x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, geometry: Geometry, p: float):
    """``I = (sign(W) |W|^(p−1)) x`` for every sample (``u`` itself when p = 2).

    Args:
        x: layer input (padded for a convolution).
        u: pre-activation ``w·x`` without bias.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        p: the Lebesgue exponent p ≥ 1.

    Returns:
        ``I``, shaped like ``u``.
    """
    if p == 2:
        return u
    wp = weight.sign() * weight.abs().pow(p - 1)
    if geometry is None:
        return x @ wp.T
    return F.conv2d(x, wp, None, geometry.stride, geometry.padding, geometry.dilation)


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    p: float,
    k: int,
    delta: float,
    out: list[torch.Tensor] | None = None,
) -> dict:
    """``{"gx": Σ g xᵀ (shaped like W), "gi": Σ g I (N)}`` of one batch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        p: the Lebesgue exponent of the currents.
        k: the rank that is pushed away (2 ≤ k ≤ N).
        delta: the strength Δ ≥ 0 of the anti-Hebbian push.
        out: spare tensors ``Σ g xᵀ`` may be written into (see
            :func:`~hebbopt.rules.geometry.patch_sum`).

    Returns:
        the sums of this batch.
    """
    i = currents(x, u, weight, geometry, p)
    ranked = i.topk(k, dim=1).indices
    g = torch.zeros_like(i)
    g.scatter_(1, ranked[:, :1], 1.0).scatter_(1, ranked[:, k - 1 : k], -delta)
    return {"gx": patch_sum(g, x, weight, geometry, out), "gi": (g * i).sum(sample_dims(i))}


def winners(
    x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, geometry: Geometry, *, p: float
) -> torch.Tensor:
    """The top-ranked neuron by the currents ``I`` of every sample (the one with ``g = 1``).

    Args:
        x: layer input (padded for a convolution).
        u: pre-activation ``w·x`` without bias.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        p: the Lebesgue exponent of the currents.

    Returns:
        the winner's index per sample, M or B×H'×W'.
    """
    return winner(currents(x, u, weight, geometry, p))


def update(stats: dict, weight: torch.Tensor) -> torch.Tensor:
    """``ΔW = D / max(max|D|, 1e-30)`` with ``D = Σ g x − (Σ g I) w``.

    Args:
        stats: the summed statistics.
        weight: the current weight W.

    Returns:
        ΔW without η, shaped like ``weight``.
    """
    d = stats["gx"] - weight_view(stats["gi"], weight) * weight
    return d / d.abs().amax().clamp_min(1e-30)


def apply_(weight: torch.Tensor, stats: dict, lr: torch.Tensor) -> None:
    """``W ← W + lr·ΔW`` in place, with no weight-sized temporary: ``D`` is formed in
    ``stats["gx"]`` (the step's own sums, consumed by it), then ``W += (lr / max(max|D|, 1e-30))·D``.

    Args:
        weight: the weight W to update in place (a detached view of the parameter).
        stats: the summed statistics; ``stats["gx"]`` is overwritten with ``D``.
        lr: the learning rate η as a 0-d tensor.
    """
    if torch.compiler.is_compiling():  # inductor fuses the functional form into one pass
        weight.add_(update(stats, weight) * lr)
        return
    d = stats["gx"].addcmul_(weight_view(stats["gi"], weight), weight, value=-1)
    lo, hi = torch.aminmax(d)  # max|D| in one pass, without |D|
    weight.add_(d.mul_(lr / torch.maximum(-lo, hi).clamp_min(1e-30)))


def reference(layer: torch.nn.Module, x: torch.Tensor, *, p: float, k: int, delta: float) -> torch.Tensor:
    """Per sample, literally: ranks by ``I_b``, ``D_n = Σ_b g_bn (x_b − I_bn w_n)``, then scaled.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        x: its input.
        p: the Lebesgue exponent.
        k: the pushed-away rank.
        delta: the anti-Hebbian strength Δ.

    Returns:
        ΔW without η, shaped like the layer's weight.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    wp = w.sign() * w.abs() ** (p - 1)
    d = torch.zeros_like(w)
    for xb in xp:
        current = wp @ xb
        order = torch.argsort(current, descending=True)
        g = torch.zeros_like(current)
        g[order[0]], g[order[k - 1]] = 1.0, -delta
        d += g[:, None] * (xb[None, :] - current[:, None] * w)
    return (d / d.abs().max().clamp_min(1e-30)).reshape(layer.weight.shape)


def _check_k(hyper: dict, weight: torch.Tensor) -> str | None:
    if hyper["k"] > weight.shape[0]:
        return f"invalid k: {hyper['k']} ranks but the layer has {weight.shape[0]} neurons (need k ≤ N)"
    return None


RULE = Rule(
    name="krotov",
    summary="Krotov–Hopfield competing hidden units (PNAS 2019)",
    hyper={
        "p": Hyper(2.0, number(1, strict=False), "Lebesgue exponent p of the currents (sign(W)|W|^(p−1))·x"),
        "k": Hyper(2, integer(2), "rank k that gets the anti-Hebbian push −Δ (2 ≤ k ≤ N)"),
        "delta": Hyper(0.4, number(0, strict=False), "strength Δ of the anti-Hebbian push"),
    },
    statistics=statistics,
    update=update,
    apply_=apply_,
    reference=reference,
    weight_shaped=frozenset({"gx"}),
    check_layer=_check_k,
    winners=winners,
    examples=({"p": 2.0, "k": 2, "delta": 0.4}, {"p": 3.0, "k": 3, "delta": 0.1}),
)
