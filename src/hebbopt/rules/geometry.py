"""Layer geometry and the two products every rule is built from.

A layer sees inputs ``x`` and pre-activations ``u``. For a Linear layer the rows of ``x`` (M×S)
are the samples. For a Conv2d layer every output position of every image is a sample ``b`` whose
input is the patch ``x_b`` (S = C·kh·kw values) under the kernel there. The rules need
``Σ_b g_b x_bᵀ`` for some per-sample, per-neuron coefficient ``g`` (N×S) and per-patch norms
``‖x_b‖²``. For a convolution both are convolutions themselves, so no patch is ever unfolded:

* ``Σ_b g_b x_bᵀ`` is the weight-gradient of the convolution with ``g`` as output-gradient
  (``aten.convolution_backward`` with only the weight output requested);
* ``‖x_b‖²`` is the convolution of ``Σ_c x²`` with a one-channel kernel of ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class Conv2dGeometry(NamedTuple):
    """Stride, (symmetric) zero padding and dilation of a 2-d convolution with ``groups=1``.

    Non-zero padding modes and asymmetric padding are applied to the input before the rule
    sees it (see :mod:`hebbopt.capture`), so the rule only ever needs symmetric zero padding.
    """

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


Geometry = Conv2dGeometry | None
"""``None`` for a Linear layer (inputs M×S, pre-activations M×N)."""


def patch_sum(g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``Σ_b g_b x_bᵀ`` summed over all samples and positions, shaped like ``weight``.

    Args:
        g: per-sample coefficients, M×N (Linear) or B×N×H'×W' (Conv2d).
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, already padded if needed).
        weight: the layer weight (only its shape and dtype are used).
        geometry: ``None`` for Linear, else the convolution's :class:`Conv2dGeometry`.
    """
    if geometry is None:
        return g.transpose(0, 1) @ x
    return torch.ops.aten.convolution_backward(
        g,
        x,
        weight,
        None,
        list(geometry.stride),
        list(geometry.padding),
        list(geometry.dilation),
        False,
        [0, 0],
        1,
        [False, True, False],
    )[1]


def patch_sq_norms(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``‖x_b‖²`` for every sample: M×1 (Linear) or B×1×H'×W' (Conv2d)."""
    if geometry is None:
        return (x * x).sum(dim=1, keepdim=True)
    # Σ_c first, then a one-channel box filter: the same sum as a C-channel kernel of ones, C×
    # fewer multiply-adds.
    ones = torch.ones((1, 1, *weight.shape[2:]), dtype=x.dtype, device=x.device)
    channel_sq = (x * x).sum(dim=1, keepdim=True)
    sq = F.conv2d(channel_sq, ones, None, geometry.stride, geometry.padding, geometry.dilation)
    # Fast convolution algorithms may return tiny negatives for a sum of squares.
    return sq.clamp_min(0)


def neuron_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-neuron vector (N) to broadcast against a weight or a pre-activation."""
    return v.reshape(1, -1, *([1] * (like.dim() - 2)))


def weight_view(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Reshape a per-neuron vector (N) to broadcast against ``weight`` (N×...)."""
    return v.reshape(-1, *([1] * (weight.dim() - 1)))


def sample_dims(u: torch.Tensor) -> list[int]:
    """Every dimension of a pre-activation except the neuron dimension (1)."""
    return [d for d in range(u.dim()) if d != 1]


def as_rows(y: torch.Tensor) -> torch.Tensor:
    """Pre-activations as an M×N matrix, one row per sample (image × position)."""
    if y.dim() == 2:
        return y
    return y.movedim(1, -1).reshape(-1, y.shape[1])
