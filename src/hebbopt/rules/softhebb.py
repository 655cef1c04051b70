r"""SoftHebb (Journé, Rodriguez, Guo, Moraitis, ICLR 2023, "Hebbian deep learning without feedback").

Per sample ``b`` (an image, or a patch position of an image) and neuron ``n``, with the
pre-activation ``u_bn = w_n · x_b`` (no bias):

    y_bn = softmax_n(u_bn / T),      ỹ_bn = +y_bn if n = argmax_n' u_bn' else −y_bn

The winner is Hebbian, every other neuron anti-Hebbian. Summed over the batch:

    D_n = Σ_b ỹ_bn (x_b − u_bn w_n) = Σ_b ỹ_bn x_b − (Σ_b ỹ_bn u_bn) w_n

so the sufficient statistics are ``Σ_b ỹ_b x_bᵀ`` (for a convolution, its weight-gradient with
``ỹ`` as output-gradient: no unfolding) and ``Σ_b ỹ_b u_b`` (N). At ``step()`` the summed ``D``
is normalised over the layer and each neuron gets its own rate:

    ΔW_n = η_n D_n / (max|D| + 1e-30),      η_n = η (|‖w_n‖₂ − 1| + 1e-10)^power_lr

(``power_lr = 0`` gives every neuron η). The normalisation acts on the sums, so k forwards before
one step equal one batch k× larger, and N processes one process with N× the batch.
The paper's ``t_invert`` is ``1 / T``; its per-neuron rate is a scheduler in the reference code
(``WeightNormDependentLR``), here part of the rule.
"""

from __future__ import annotations

import torch

from hebbopt.rules.base import Hyper, Rule, number
from hebbopt.rules.geometry import Geometry, patch_sum, patches, sample_dims, weight_view, winner
from hebbopt.rules.swta import softmax_neurons_


def signed_softmax(u: torch.Tensor, temperature: float) -> torch.Tensor:
    """``ỹ``: ``softmax_n(u / T)``, negated for every neuron but the winner (argmax of ``u``).

    Args:
        u: pre-activations, M×N or B×N×H'×W' (neurons on dimension 1).
        temperature: softmax temperature T > 0.

    Returns:
        ``ỹ``, shaped like ``u``.

    Examples:
        >>> import torch
        >>> signed_softmax(torch.tensor([[2.0, 0.0]]), 1.0)
        tensor([[ 0.8808, -0.1192]])
    """
    y = softmax_neurons_(u / temperature)
    first = winner(u, keepdim=True)
    # −y everywhere, then the winner's +y written back, all in the one full-size buffer.
    return y.neg_().scatter_(1, first, y.gather(1, first).neg_())


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    temperature: float,
    out: list[torch.Tensor] | None = None,
):
    """``{"yx": Σ ỹ xᵀ (shaped like W), "yu": Σ ỹ u (N)}`` of one batch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W.
        geometry: ``None`` for Linear, else the convolution's geometry.
        temperature: softmax temperature T > 0 (the paper's ``1 / t_invert``).
        out: spare tensors ``Σ ỹ xᵀ`` may be written into (see
            :func:`~hebbopt.rules.geometry.patch_sum`).

    Returns:
        the sums of this batch.
    """
    yt = signed_softmax(u, temperature)
    yx = patch_sum(yt, x, weight, geometry, out)
    return {"yx": yx, "yu": yt.mul_(u).sum(sample_dims(u))}  # ỹ is not needed after Σ ỹ xᵀ


def winners(x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """The winner of every sample: the neuron of largest ``u``, the Hebbian one of :func:`signed_softmax`.

    Args:
        x: layer input (unused).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight (unused).
        geometry: ``None`` for Linear, else the convolution's geometry (unused).

    Returns:
        the winner's index per sample, M or B×H'×W'.
    """
    return winner(u)


def update(stats: dict, weight: torch.Tensor, *, power_lr: float) -> torch.Tensor:
    """``ΔW_n = (|‖w_n‖ − 1| + 1e-10)^power_lr · D_n / (max|D| + 1e-30)``, ``D = Σ ỹ x − (Σ ỹ u) w``.

    Args:
        stats: the summed statistics.
        weight: the current weight W.
        power_lr: exponent of the per-neuron rate (0: the same rate for every neuron).

    Returns:
        ΔW without η, shaped like ``weight``.
    """
    d = stats["yx"] - weight_view(stats["yu"], weight) * weight
    rate = (weight.flatten(1).norm(dim=1) - 1).abs_().add_(1e-10).pow_(power_lr)
    return d.mul_(weight_view(rate, weight) / (d.abs().amax() + 1e-30))


def apply_(weight: torch.Tensor, stats: dict, lr: torch.Tensor, *, power_lr: float) -> None:
    """``W ← W + lr·ΔW`` in place, with no weight-sized temporary: ``D`` is formed in
    ``stats["yx"]`` (the step's own sums, consumed by it), then ``W += (lr·η_n / (max|D| + 1e-30))·D``.

    Args:
        weight: the weight W to update in place (a detached view of the parameter).
        stats: the summed statistics; ``stats["yx"]`` is overwritten with ``D``.
        lr: the learning rate η as a 0-d tensor.
        power_lr: exponent of the per-neuron rate.
    """
    if torch.compiler.is_compiling():  # inductor fuses the functional form (and fails on this one)
        weight.add_(update(stats, weight, power_lr=power_lr) * lr)
        return
    d = stats["yx"].addcmul_(weight_view(stats["yu"], weight), weight, value=-1)
    rate = (weight.flatten(1).norm(dim=1) - 1).abs_().add_(1e-10).pow_(power_lr)
    lo, hi = torch.aminmax(d)  # max|D| in one pass, without |D|
    weight.addcmul_(d, weight_view(rate * (lr / (torch.maximum(-lo, hi) + 1e-30)), weight))


def reference(
    layer: torch.nn.Module, x: torch.Tensor, *, temperature: float, power_lr: float
) -> torch.Tensor:
    """Per sample, literally: ``D_n = Σ_b ỹ_bn (x_b − u_bn w_n)`` over unfolded patches, then scaled.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv2d``.
        x: its input.
        temperature: softmax temperature T.
        power_lr: exponent of the per-neuron rate.

    Returns:
        ΔW without η, shaped like the layer's weight.
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    d = torch.zeros_like(w)
    for xb in xp:
        u = w @ xb
        y = torch.softmax(u / temperature, dim=0)
        sign = -torch.ones_like(y)
        sign[u.argmax()] = 1
        d += (sign * y)[:, None] * (xb[None, :] - u[:, None] * w)
    rate = ((w.norm(dim=1) - 1).abs() + 1e-10) ** power_lr
    return (rate[:, None] * d / (d.abs().max() + 1e-30)).reshape(layer.weight.shape)


RULE = Rule(
    name="softhebb",
    summary="SoftHebb: soft winner Hebbian, others anti-Hebbian (Journé et al., ICLR 2023)",
    hyper={
        "temperature": Hyper(1.0, number(0, strict=True), "softmax temperature T (1 / t_invert)"),
        "power_lr": Hyper(
            0.5, number(0, strict=False), "per-neuron rate exponent: η (|‖w_n‖ − 1| + 1e-10)^power_lr"
        ),
    },
    statistics=statistics,
    update=update,
    apply_=apply_,
    reference=reference,
    weight_shaped=frozenset({"yx"}),
    winners=winners,
    reads_weight=False,
    examples=({"temperature": 1.0, "power_lr": 0.5}, {"temperature": 0.3, "power_lr": 0.0}),
)
