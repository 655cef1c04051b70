r"""BCM (Bienenstock, Cooper, Munro 1982): Hebbian above a sliding threshold θ, anti-Hebbian below.

Per sample ``n`` (a row of a Linear input, or every patch of every image of a convolution), with the
pre-activation ``u_n = W x_n`` (no bias) and a threshold θ per output unit:

    ΔW = η (1/N) Σ_n (u_n ⊙ (u_n − θ)) x_nᵀ

using θ from before this step, after which the threshold follows the mean squared activity:

    θ ← θ + (mean_n u_n² − θ) / τ

θ starts at 0 and is the rule's state: the optimizer keeps it in ``state[weight]["rule_state"]``,
saves and loads it with ``state_dict()``, and updates it from the summed (and, across processes,
all-reduced) statistics, so k forwards before one step equal one batch k× larger and every
process keeps the same θ.

Sufficient statistics: ``Σ_n (u_n ⊙ (u_n − θ)) x_nᵀ`` (a convolution weight-gradient for Conv2d,
no unfolding), ``Σ_n u_n²`` (one per unit) and the count ``N``.
"""

from __future__ import annotations

import torch

from hebbopt.rules.base import Hyper, Rule, number
from hebbopt.rules.geometry import Geometry, as_rows, neuron_view, patch_sum, patches, sample_dims


def init_state(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """θ = 0 for every output unit, in the weight's dtype (at least float32) and device.

    Args:
        weight: the layer weight W, N×S or N×C×kh×kw.

    Returns:
        ``{"theta": zeros(N)}``.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)
    return {"theta": torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)}


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    state: dict,
    *,
    out: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor | int]:
    """``{"gx": Σ (u ⊙ (u − θ)) xᵀ (shaped like W), "u2": Σ u² (N), "count": N samples}``.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``W x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        state: ``{"theta": θ}``, the thresholds before this step.
        out: spare tensors the weight-shaped sum may be written into (see
            :func:`~hebbopt.rules.geometry.patch_sum`).

    Returns:
        the sums of this batch.

    Examples:
        >>> import torch
        >>> w, x = torch.randn(3, 4), torch.randn(10, 4)
        >>> stats = statistics(x, x @ w.T, w, None, init_state(w))
        >>> stats["gx"].shape, stats["u2"].shape, stats["count"]
        (torch.Size([3, 4]), torch.Size([3]), 10)
    """
    g = u - neuron_view(state["theta"].to(u.dtype), u)
    g.mul_(u)
    return {
        "gx": patch_sum(g, x, weight, geometry, out),
        "u2": u.square().sum(sample_dims(u)),
        "count": as_rows(u).shape[0],
    }


def update(stats: dict, weight: torch.Tensor, state: dict) -> torch.Tensor:
    """``ΔW = (1/N) Σ_n (u_n ⊙ (u_n − θ)) x_nᵀ`` (without η).

    Args:
        stats: the summed statistics.
        weight: the current weight W (unused: it entered the statistics already).
        state: ``{"theta": θ}`` (unused: it entered the statistics already).

    Returns:
        ΔW, shaped like the weight.
    """
    return stats["gx"] / stats["count"]


def apply_(weight: torch.Tensor, stats: dict, state: dict, lr: torch.Tensor, *, tau: float) -> dict:
    """``W ← W + lr·ΔW`` in place; returns the new ``θ ← θ + (mean u² − θ) / τ``.

    Args:
        weight: the weight W to update in place.
        stats: the summed (all-reduced) statistics.
        state: ``{"theta": θ}`` before this step.
        lr: the learning rate η as a 0-d tensor.
        tau: the time constant τ ≥ 1 of the threshold's running average.

    Returns:
        ``{"theta": new θ}`` in θ's dtype.
    """
    weight.addcmul_(stats["gx"], lr / stats["count"])
    theta = state["theta"]
    return {"theta": (theta + (stats["u2"] / stats["count"] - theta) / tau).to(theta.dtype)}


def reference(
    layer: torch.nn.Module, x: torch.Tensor, state: dict, *, tau: float
) -> tuple[torch.Tensor, dict]:
    """Per sample, literally, over unfolded patches: ``(ΔW without η, new state)``.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        x: its input.
        state: ``{"theta": θ}`` before the step.
        tau: the time constant τ.

    Returns:
        ``((1/N) Σ_n (u_n ⊙ (u_n − θ)) x_nᵀ, {"theta": θ + (mean u² − θ) / τ})``.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    theta = state["theta"]
    delta, u2 = torch.zeros_like(w), torch.zeros_like(theta)
    for xb in xp:
        u = w @ xb
        delta += (u * (u - theta))[:, None] * xb[None, :]
        u2 += u * u
    n = xp.shape[0]
    return (delta / n).reshape(layer.weight.shape), {"theta": theta + (u2 / n - theta) / tau}


RULE = Rule(
    name="bcm",
    summary="BCM: Hebbian above a sliding threshold θ, anti-Hebbian below (Bienenstock et al. 1982)",
    hyper={"tau": Hyper(100.0, number(1, strict=False), "time constant τ ≥ 1 of the threshold's average")},
    statistics=statistics,
    update=update,
    apply_=apply_,
    reference=reference,
    weight_shaped=frozenset({"gx"}),
    init_state=init_state,
    examples=({"tau": 100.0}, {"tau": 2.0}),
)
