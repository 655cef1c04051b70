r"""The FastHebb formulation as the paper writes it (eq. 6, 8): unfold patches into X (B×S), then
matrix products. Kept only as a benchmark baseline (``step_cpu.py``'s "unfold" rows); hebbopt itself
never unfolds. Both return ΔW without η, for an ``nn.Linear`` or ``nn.Conv2d`` (groups=1) and its
input ``x``; ``tests/test_exactness.py`` checks them against the rules' per-sample references.
"""

from __future__ import annotations

import torch
from torch import nn

from hebbopt.rules.geometry import patches


def _competition(xp: torch.Tensor, w: torch.Tensor, temperature: float, similarity: str) -> torch.Tensor:
    # r = softmax(s / T), as hebbopt.rules.swta.reference computes it.
    u = xp @ w.T
    if similarity == "dot":
        s = u
    else:
        cos = u / (xp.norm(dim=1, keepdim=True).clamp_min(1e-12) * w.norm(dim=1).clamp_min(1e-12))
        s = ((1 + cos) / 2) ** 2
    return torch.softmax(s / temperature, dim=1)


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
    r = _competition(xp, w, temperature, similarity)
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
