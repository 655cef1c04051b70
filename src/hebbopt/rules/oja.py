r"""Oja's rule for many neurons (Oja 1982): each neuron alone learns the first principal component.

Per sample ``b`` and neuron ``n``, with the linear output ``y_bn = u_bn = w_n · x_b``:

    Δw_n = η y_bn (x_b − y_bn w_n)

Averaged over the ``B`` samples:

    ΔW_n = (Σ_b y_bn x_b − (Σ_b y²_bn) w_n) / B

Sufficient statistics: ``Σ_b y_b x_bᵀ`` (a weight-gradient for a convolution, no unfolding),
``Σ_b y²_b`` (N) and the count ``B``. It is the worked example of docs/adding-a-rule.md.
"""

from __future__ import annotations

import torch

from hebbopt.rules.base import Rule
from hebbopt.rules.geometry import Geometry, as_rows, patch_sum, patches, sample_dims, weight_view


def statistics(
    x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, geometry: Geometry, *, out: list | None = None
) -> dict:
    """``{"yx": Σ y xᵀ (shaped like W), "y2": Σ y² (N), "count": B}``.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        out: spare tensors ``Σ y xᵀ`` may be written into (see
            :func:`~hebbopt.rules.geometry.patch_sum`).

    Returns:
        the sums of this batch.
    """
    count = as_rows(u).shape[0]
    return {"yx": patch_sum(u, x, weight, geometry, out), "y2": (u * u).sum(sample_dims(u)), "count": count}


def update(stats: dict, weight: torch.Tensor) -> torch.Tensor:
    """``ΔW_n = (Σ y_n x − (Σ y²_n) w_n) / B``.

    Args:
        stats: the summed statistics.
        weight: the current weight W.

    Returns:
        ΔW, shaped like ``weight``.
    """
    return (stats["yx"] - weight_view(stats["y2"], weight) * weight) / stats["count"]


def reference(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per sample, literally: ``ΔW = (1/B) Σ_b y_b (x_b − y_b w_n)`` over unfolded patches.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        x: its input.

    Returns:
        ΔW without η, shaped like the layer's weight.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    delta = torch.zeros_like(w)
    for xb in xp:
        y = w @ xb
        delta += y[:, None] * (xb[None, :] - y[:, None] * w)
    return (delta / xp.shape[0]).reshape(layer.weight.shape)


RULE = Rule(
    name="oja",
    summary="Oja's rule, one principal component per neuron (Oja 1982)",
    hyper={},
    statistics=statistics,
    update=update,
    reference=reference,
    weight_shaped=frozenset({"yx"}),
)
