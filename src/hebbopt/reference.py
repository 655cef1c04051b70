r"""Slow reference formulations, the ground truth of the tests and the benchmarks' baseline.

* :func:`swta_update`, :func:`hpca_update`: the paper's per-sample rules (eq. 1, 2) computed
  literally on unfolded patches, one ΔW_b per sample, then aggregated (eq. 4): O(B·N·S) memory,
  serialised over chunks of samples so that large layers still fit.
* :func:`swta_update_unfold`, :func:`hpca_update_unfold`: the FastHebb formulation as the paper
  writes it (eq. 6, 8): unfold patches into X (B×S), then matrix products.

All return ΔW without the learning rate η, for a ``nn.Linear`` or ``nn.Conv2d`` (groups=1) and
its input ``x``. Pre-activations are recomputed from the patches (no bias), independently of the
fast path's ``output − bias``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12


def patches(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every input patch of ``layer`` as a row: X is B×S (S = C·kh·kw, the weight's order).

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d`` (groups=1; any padding mode).
        x: the layer's input (any ``(*, S)`` for Linear; B×C×H×W or C×H×W for Conv2d).

    Returns:
        X, B×S with B = images × output positions, padded as the layer pads.
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, layer.in_features)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    kh, kw = layer.kernel_size
    if isinstance(layer.padding, str):
        pads = []
        for k, d in ((kw, layer.dilation[1]), (kh, layer.dilation[0])):
            total = 0 if layer.padding == "valid" else d * (k - 1)
            pads += [total // 2, total - total // 2]
    else:
        ph, pw = layer.padding
        pads = [pw, pw, ph, ph]
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    x = F.pad(x, pads, mode=mode)
    cols = F.unfold(x, (kh, kw), dilation=layer.dilation, padding=0, stride=layer.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _swta_competition(xp: torch.Tensor, w: torch.Tensor, temperature: float, similarity: str):
    u = xp @ w.T
    if similarity == "dot":
        s = u
    else:
        cos = u / (xp.norm(dim=1, keepdim=True).clamp_min(_EPS) * w.norm(dim=1).clamp_min(_EPS))
        s = ((1 + cos) / 2) ** 2
    return torch.softmax(s / temperature, dim=1)


def _chunks(m: int, per_row: int, budget: int = 2**25):
    step = max(1, budget // max(per_row, 1))
    return range(0, m, step), step


def swta_update(
    layer: nn.Module, x: torch.Tensor, *, temperature: float = 0.02, similarity: str = "raised_cos2"
) -> torch.Tensor:
    """Per-sample soft-WTA: ΔW = Σ_b c_bn r_bn (x_b − w_n), c = r / Σ_b r (eq. 1, 4, 5).

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
    r = _swta_competition(xp, w, temperature, similarity)
    z = r.sum(0)
    c = r / torch.where(z > 0, z, torch.ones_like(z))
    delta = torch.zeros_like(w)
    starts, step = _chunks(xp.shape[0], w.numel())
    for b0 in starts:
        rb, cb, xb = r[b0 : b0 + step], c[b0 : b0 + step], xp[b0 : b0 + step]
        dw_b = rb[:, :, None] * (xb[:, None, :] - w[None])  # eq. 1, one ΔW per sample
        delta += (cb[:, :, None] * dw_b).sum(0)  # eq. 4
    return delta.reshape(layer.weight.shape)


def hpca_update(layer: nn.Module, x: torch.Tensor, *, activation: str = "relu") -> torch.Tensor:
    """Per-sample HPCA: ΔW = (1/B) Σ_b y_bn (x_b − Σ_{n'≤n} y_bn' w_n') (eq. 2, 4).

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d`` (groups=1; any padding mode).
        x: the layer's input (any ``(*, S)`` for Linear; B×C×H×W or C×H×W for Conv2d).
        activation: ``"relu"`` or ``"identity"``.

    Returns:
        ΔW without η, shaped like the layer's weight.

    Examples:
        >>> import torch, torch.nn as nn
        >>> from hebbopt.rules import hpca
        >>> layer, x = nn.Linear(5, 3, bias=False).double(), torch.randn(8, 5, dtype=torch.float64)
        >>> w = layer.weight.detach()
        >>> fast = hpca.update(hpca.statistics(x, x @ w.T, w, None), w)
        >>> torch.allclose(fast, hpca_update(layer, x), atol=1e-12)
        True
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    y = xp @ w.T
    if activation == "relu":
        y = torch.relu(y)
    delta = torch.zeros_like(w)
    starts, step = _chunks(xp.shape[0], w.numel())
    for b0 in starts:
        yb, xb = y[b0 : b0 + step], xp[b0 : b0 + step]
        recon = torch.cumsum(yb[:, :, None] * w[None], dim=1)  # Σ_{n'≤n} y_bn' w_n'
        delta += (yb[:, :, None] * (xb[:, None, :] - recon)).sum(0)
    return (delta / xp.shape[0]).reshape(layer.weight.shape)


def swta_update_unfold(
    layer: nn.Module, x: torch.Tensor, *, temperature: float = 0.02, similarity: str = "raised_cos2"
) -> torch.Tensor:
    """FastHebb soft-WTA on unfolded patches: (matmul((CR)ᵀ, X) − Q W) (eq. 6).

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
    r = _swta_competition(xp, w, temperature, similarity)
    z = r.sum(0)
    cr = (r * r) / torch.where(z > 0, z, torch.ones_like(z))
    return (cr.T @ xp - cr.sum(0)[:, None] * w).reshape(layer.weight.shape)


def hpca_update_unfold(layer: nn.Module, x: torch.Tensor, *, activation: str = "relu") -> torch.Tensor:
    """FastHebb HPCA on unfolded patches: (matmul(Yᵀ, X) − matmul(P, W)) / B, P = YᵀY ∘ L (eq. 8).

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d`` (groups=1; any padding mode).
        x: the layer's input (any ``(*, S)`` for Linear; B×C×H×W or C×H×W for Conv2d).
        activation: ``"relu"`` or ``"identity"``.

    Returns:
        ΔW without η, shaped like the layer's weight.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    y = xp @ w.T
    if activation == "relu":
        y = torch.relu(y)
    p = torch.tril(y.T @ y)
    return ((y.T @ xp - p @ w) / xp.shape[0]).reshape(layer.weight.shape)
