r"""Soft winner-takes-all (SWTA), the FastHebb form (paper eq. 1, 5, 6).

Per sample ``b`` (an image, or a patch position of an image) and neuron ``n`` the rule is

    Δw_n = η r_bn (x_b − w_n),        r_bn = softmax_n(s_bn / T)                       (eq. 1)

Aggregating over the batch with weights ``c_bn = r_bn / Σ_b r_bn`` (eq. 4, 5) and contracting
``b`` early (eq. 6) gives

    ΔW_n = (Σ_b r²_bn x_b − (Σ_b r²_bn) w_n) / Σ_b r_bn

so three sums are sufficient statistics: ``A = Σ_b r²_b x_bᵀ`` (N×S), ``q = Σ_b r²_b`` (N) and
``z = Σ_b r_b`` (N). They add across forward passes and across processes.

Similarity ``s``:

* ``"raised_cos2"`` (default; what the FastHebb reference code uses for soft-WTA):
  ``s = ((1 + cos(w_n, x_b)) / 2)²`` with ``cos = u_bn / (‖w_n‖ ‖x_b‖)``, where ``u = w·x`` is the
  pre-activation without bias.
* ``"dot"``: ``s = u_bn = w_n · x_b``.
"""

from __future__ import annotations

import torch
from torch import nn

from hebbopt.rules.base import Hyper, Rule, number, one_of
from hebbopt.rules.geometry import (
    Geometry,
    neuron_view,
    patch_sq_norms,
    patch_sum,
    patches,
    sample_chunks,
    sample_dims,
    weight_view,
    winner,
    zero_subnormal,
)

SIMILARITIES = ("raised_cos2", "dot")
"""Accepted values of ``similarity``."""
_EPS = 1e-12


def scaled_similarity(
    x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, geometry: Geometry, kind: str, temperature: float
) -> torch.Tensor:
    """``s_bn / T`` for every sample and neuron, shaped like ``u`` (a new tensor).

    Norms are clamped at 1e-12 before dividing, so an all-zero patch or weight gives cos = 0.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W, N×S or N×C×kh×kw.
        geometry: ``None`` for Linear, else :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        kind: ``"raised_cos2"`` (``((1 + cos(w_n, x_b)) / 2)²``) or ``"dot"`` (``w_n · x_b``).
        temperature: softmax temperature ``T > 0``.

    Returns:
        ``s / T``, shaped like ``u``.

    Examples:
        >>> import torch
        >>> w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> x = torch.tensor([[2.0, 0.0]])  # parallel to w_0, orthogonal to w_1
        >>> scaled_similarity(x, x @ w.T, w, None, "raised_cos2", 1.0)  # ((1 + cos) / 2)²
        tensor([[1.0000, 0.2500]])
    """
    if kind == "dot":
        return u / temperature
    # ((1 + cos) / 2)² / T = (c + c·cos)² with c = √(1 / 4T): c folded into 1/‖w_n‖, so one
    # multiplication allocates the buffer and three in-place passes finish it.
    c = (0.25 / temperature) ** 0.5
    scale_w = neuron_view(weight.flatten(1).norm(dim=1).clamp_min(_EPS).reciprocal().mul_(c), u)
    inv_x = patch_sq_norms(x, weight, geometry).sqrt_().clamp_min_(_EPS).reciprocal_()
    return (u * scale_w).mul_(inv_x).add_(c).square_()


def softmax_neurons(s: torch.Tensor) -> torch.Tensor:
    """Softmax over the neuron dimension (1), without a layout copy for channels-last maps.

    Args:
        s: scaled similarities ``s / T``, M×N or B×N×H'×W' (any memory format).

    Returns:
        ``r = softmax_n(s / T)``, shaped like ``s``; ``r`` sums to 1 over neurons at every sample.
        Subnormal values are set to 0 (:func:`~hebbopt.rules.geometry.zero_subnormal`).
    """
    if s.dim() == 4 and s.permute(0, 2, 3, 1).is_contiguous():
        r = torch.softmax(s.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)
    else:
        r = torch.softmax(s, dim=1)
    return zero_subnormal(r, inplace=False)  # autograd may need the softmax's own output


def softmax_neurons_(s: torch.Tensor) -> torch.Tensor:
    """:func:`softmax_neurons` that may write over its input: use the returned tensor.

    On the CPU the statistics of a first layer are memory-bound: a fresh B×N×H'×W' buffer per
    call costs more (page faults) than the arithmetic, so there the softmax writes over ``s``
    (``out=s``; the CPU kernel reads each row, for its maximum, before writing it; a test checks
    the result against ``torch.softmax`` for every layout and dtype). Elsewhere, and under
    ``torch.compile`` (inductor plans its own buffers) or when autograd records, it is the
    functional softmax.

    Args:
        s: scaled similarities ``s / T``, M×N or B×N×H'×W' (any memory format); may be overwritten.

    Returns:
        ``r = softmax_n(s)``, shaped like ``s`` (on the CPU, ``s`` itself).
    """
    recorded = s.requires_grad and torch.is_grad_enabled()
    if torch.compiler.is_compiling() or s.device.type != "cpu" or recorded:
        return softmax_neurons(s)
    rows, dim = s, 1
    if s.dim() == 4 and s.permute(0, 2, 3, 1).is_contiguous():  # channels-last: neurons innermost
        rows, dim = s.permute(0, 2, 3, 1), -1
    torch.ops.aten._softmax.out(rows, dim, False, out=rows)
    return zero_subnormal(s)


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    temperature: float,
    similarity: str = "raised_cos2",
    out: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Sufficient statistics of one batch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W, N×S or N×C×kh×kw.
        geometry: ``None`` for Linear, else :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        temperature: softmax temperature ``T > 0``.
        similarity: ``"raised_cos2"`` or ``"dot"``.
        out: spare tensors ``A`` may be written into (see :func:`~hebbopt.rules.geometry.patch_sum`).

    Returns:
        ``{"r2x": A (shape of W), "r2": q (N), "r": z (N)}``.

    Examples:
        >>> import torch
        >>> from hebbopt.rules import swta
        >>> w, x = torch.randn(3, 4), torch.randn(10, 4)
        >>> stats = swta.statistics(x, x @ w.T, w, None, temperature=0.1)
        >>> {k: tuple(v.shape) for k, v in stats.items()}
        {'r2x': (3, 4), 'r2': (3,), 'r': (3,)}
        >>> round(float(stats["r"].sum()), 4)  # Σ_b Σ_n r_bn = B: r sums to 1 over neurons
        10.0
    """
    # softmax subtracts the per-position maximum: stable for any T > 0 and any scale of s.
    # One full-size buffer for s, r and r² in turn (see softmax_neurons_).
    r = softmax_neurons_(scaled_similarity(x, u, weight, geometry, similarity, temperature))
    dims = sample_dims(u)
    z = r.sum(dims)
    r2 = zero_subnormal(r.square_())  # squares of r below ~1e-19 are subnormal
    return {"r2x": patch_sum(r2, x, weight, geometry, out), "r2": r2.sum(dims), "r": z}


def winners(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    similarity: str = "raised_cos2",
) -> torch.Tensor:
    """The neuron of largest similarity ``s_bn``, hence of largest ``r_bn``, for every sample.

    For ``"raised_cos2"`` that is the largest ``cos(w_n, x_b)``: ``‖x_b‖`` is common to every
    neuron and ``((1 + cos) / 2)²`` grows with ``cos``, so ``u_bn / ‖w_n‖`` ranks the neurons
    alike without the patch norms.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W, N×S or N×C×kh×kw.
        geometry: ``None`` for Linear, else :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        similarity: ``"raised_cos2"`` or ``"dot"``.

    Returns:
        the winner's index per sample, M or B×H'×W'.
    """
    if similarity == "dot":
        return winner(u)
    return winner(u * neuron_view(weight.flatten(1).norm(dim=1).clamp_min(_EPS).reciprocal(), u))


def update(stats: dict[str, torch.Tensor], weight: torch.Tensor) -> torch.Tensor:
    """``ΔW_n = (A_n − q_n w_n) / z_n`` (eq. 6 without η); zero for a neuron with ``z_n = 0``.

    Args:
        stats: the sums of :func:`statistics` (accumulated over any number of batches).
        weight: the current weight W (N×S or N×C×kh×kw).

    Returns:
        ΔW, shaped like ``weight``.
    """
    z = _safe(stats["r"])
    return (stats["r2x"] - weight_view(stats["r2"], weight) * weight) / weight_view(z, weight)


def apply_(weight: torch.Tensor, stats: dict[str, torch.Tensor], lr: torch.Tensor) -> None:
    """``W ← W + lr·ΔW`` in place, as ``W ← W·(1 − lr·q/z) + (lr/z)·A``.

    No N×S temporary (ΔW is never formed), one fused pass when compiled.

    Args:
        weight: the weight W to update in place (a detached view of the parameter).
        stats: the sums of :func:`statistics`.
        lr: the learning rate η as a 0-d tensor, so that a compiled ``apply_`` does not
            recompile when a scheduler changes it.
    """
    coef = lr / _safe(stats["r"])
    weight.mul_(weight_view(1 - coef * stats["r2"], weight)).addcmul_(stats["r2x"], weight_view(coef, weight))


def bound(absmax: torch.Tensor, stats: dict[str, torch.Tensor], lr: torch.Tensor) -> torch.Tensor:
    """An upper bound on ``max|W·(1 − lr·q/z) + (lr/z)·A|`` before it is formed:
    ``max_n (|1 − lr·q_n/z_n|·max|W| + |lr/z_n|·max|A|)``.

    Args:
        absmax: ``max|W|`` as a 0-d float32 tensor.
        stats: the sums of :func:`statistics`.
        lr: the learning rate η as a 0-d tensor.

    Returns:
        the bound as a 0-d float32 tensor; NaN or Inf when any statistic is not finite.
    """
    z = stats["r"].float()
    coef = lr.float() / _safe(z)
    lo, hi = torch.aminmax(stats["r2x"])
    a = torch.maximum(lo.float().abs(), hi.float().abs())
    b = ((1 - coef * stats["r2"].float()).abs() * absmax + coef.abs() * a).max()
    return torch.where(torch.isfinite(z).all(), b, torch.nan)  # _safe would hide a NaN in z


def _safe(z: torch.Tensor) -> torch.Tensor:
    # z_n = 0 only if r_bn underflowed to 0 for every sample; then A_n = q_n = 0 as well.
    return torch.where(z > 0, z, torch.ones_like(z))


def _competition(xp: torch.Tensor, w: torch.Tensor, temperature: float, similarity: str):
    u = xp @ w.T
    if similarity == "dot":
        s = u
    else:
        cos = u / (xp.norm(dim=1, keepdim=True).clamp_min(_EPS) * w.norm(dim=1).clamp_min(_EPS))
        s = ((1 + cos) / 2) ** 2
    return torch.softmax(s / temperature, dim=1)


def reference(
    layer: nn.Module, x: torch.Tensor, *, temperature: float = 0.02, similarity: str = "raised_cos2"
) -> torch.Tensor:
    """Per sample, literally: ΔW = Σ_b c_bn r_bn (x_b − w_n), c = r / Σ_b r (eq. 1, 4, 5).

    One ΔW_b per sample on unfolded patches, then aggregated (eq. 4): O(B·N·S) memory,
    serialised over chunks of samples so that large layers still fit. Slow on purpose: the ground
    truth of the tests and the benchmarks' "before FastHebb" baseline.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d`` (groups=1; any padding mode).
        x: the layer's input (any ``(*, S)`` for Linear; B×C×H×W or C×H×W for Conv2d).
        temperature: softmax temperature T.
        similarity: ``"raised_cos2"`` or ``"dot"``.

    Returns:
        ΔW without η, shaped like the layer's weight.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    r = _competition(xp, w, temperature, similarity)
    z = r.sum(0)
    c = r / torch.where(z > 0, z, torch.ones_like(z))
    delta = torch.zeros_like(w)
    starts, step = sample_chunks(xp.shape[0], w.numel())
    for b0 in starts:
        rb, cb, xb = r[b0 : b0 + step], c[b0 : b0 + step], xp[b0 : b0 + step]
        dw_b = rb[:, :, None] * (xb[:, None, :] - w[None])  # eq. 1, one ΔW per sample
        delta += (cb[:, :, None] * dw_b).sum(0)  # eq. 4
    return delta.reshape(layer.weight.shape)


RULE = Rule(
    name="swta",
    summary="soft winner-takes-all (FastHebb eq. 1, 5, 6)",
    hyper={
        "temperature": Hyper(0.02, number(0, strict=True), "softmax temperature T"),
        "similarity": Hyper("raised_cos2", one_of(*SIMILARITIES), "similarity s: ((1 + cos) / 2)² or w·x"),
    },
    statistics=statistics,
    update=update,
    apply_=apply_,
    bound=bound,
    reference=reference,
    weight_shaped=frozenset({"r2x"}),
    winners=winners,
    examples=({"temperature": 0.02, "similarity": "raised_cos2"}, {"temperature": 0.7, "similarity": "dot"}),
)
