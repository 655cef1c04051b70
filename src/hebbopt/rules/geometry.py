"""Layer geometry and the two products every rule is built from.

A layer sees inputs ``x`` and pre-activations ``u``. For a Linear layer the rows of ``x`` (M×S)
are the samples. For a Conv2d layer every output position of every image is a sample ``b`` whose
input is the patch ``x_b`` (S = C·kh·kw values) under the kernel there. The rules need
``Σ_b g_b x_bᵀ`` for some per-sample, per-neuron coefficient ``g`` (N×S) and per-patch norms
``‖x_b‖²``. For a convolution both are convolutions themselves, so patches need not be unfolded:

* ``Σ_b g_b x_bᵀ`` is the weight-gradient of the convolution with ``g`` as output-gradient
  (``aten.convolution_backward`` with only the weight output requested);
* ``‖x_b‖²`` is the convolution of ``Σ_c x²`` with a one-channel kernel of ones.

Except for ``Σ_b g_b x_bᵀ`` on a CPU where a map has few positions: there oneDNN's weight-gradient
kernels are slow (2 threads, batch 10: a 384→1536 3×3 convolution on 8×8 maps 59–89 ms against
45–47 ms as patches and one product; 512→512 on 2×2 maps 15–20 ms against 3 ms), so
:func:`patch_sum` unfolds the patches there (:func:`unfold_pays` says where), a chunk of images at
a time: at most about 2²⁰ patch values are unfolded at once.

A Linear layer's ``Σ_b g_b x_bᵀ`` is a fresh N×S matrix per forward pass, which on the CPU costs
more in page faults than in multiply-adds (a 4096×2304 product: 17 ms fresh, 8 ms into an existing
buffer, 2 threads). :func:`patch_sum` therefore takes ``out``, a list of spare tensors it may write
into (the optimizer hands over the statistics it has just applied, as an explicit argument of the
rule's ``statistics``); without it every result is fresh.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dGeometry(NamedTuple):
    """Stride, (symmetric) zero padding and dilation of a 2-d convolution with ``groups=1``.

    Non-zero padding modes and asymmetric padding are applied to the input before the rule
    sees it (see :mod:`hebbopt.capture`), so the rule only ever needs symmetric zero padding.

    Attributes:
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)`` zeros on each side.
        dilation: ``(dh, dw)``.

    Examples:
        >>> Conv2dGeometry(stride=(1, 1), padding=(2, 2), dilation=(1, 1))
        Conv2dGeometry(stride=(1, 1), padding=(2, 2), dilation=(1, 1))
    """

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]


Geometry = Conv2dGeometry | None
"""``None`` for a Linear layer (inputs M×S, pre-activations M×N)."""


def patch_sum(
    g: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    out: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """``Σ_b g_b x_bᵀ`` summed over all samples and positions, shaped like ``weight``.

    Args:
        g: per-sample coefficients, M×N (Linear) or B×N×H'×W' (Conv2d).
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, already padded if needed).
        weight: the layer weight (only its shape and dtype are used).
        geometry: ``None`` for Linear, else the convolution's :class:`Conv2dGeometry`.
        out: spare tensors free to be overwritten (e.g. the statistics a step has just applied),
            or ``None``. For a Linear layer the first one of the result's shape, dtype and device
            is taken from the list and written into; ignored under autograd recording and
            ``torch.compile`` (inductor plans its own buffers), and for a convolution.

    Returns:
        N×S (Linear) or N×C×kh×kw (Conv2d): a convolution's weight-gradient with ``g`` as the
        output-gradient, computed without unfolding patches.

    Examples:
        >>> import torch, torch.nn as nn
        >>> conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        >>> x, g = torch.randn(4, 2, 6, 6), torch.randn(4, 3, 6, 6)
        >>> geometry = Conv2dGeometry((1, 1), (1, 1), (1, 1))
        >>> unfolded = nn.functional.unfold(x, 3, padding=1)  # B×S×positions, for comparison
        >>> literal = torch.einsum("bnp,bsp->ns", g.flatten(2), unfolded).reshape(3, 2, 3, 3)
        >>> torch.allclose(patch_sum(g, x, conv.weight, geometry), literal, atol=1e-4)
        True
        >>> spare = [torch.empty(3, 4)]
        >>> g, x = torch.randn(10, 3), torch.randn(10, 4)
        >>> result = patch_sum(g, x, spare[0], None, out=spare)
        >>> spare == [] and torch.allclose(result, g.T @ x)  # written into the spare tensor
        True
    """
    if geometry is None:
        buffer = None if out is None or torch.compiler.is_compiling() else take_spare(out, weight.shape, g, x)
        return g.transpose(0, 1) @ x if buffer is None else torch.mm(g.transpose(0, 1), x, out=buffer)
    if unfold_pays(g, weight, geometry):
        return unfolded_patch_sum(g, x, weight, geometry)
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


def zero_subnormal(t: torch.Tensor, *, inplace: bool = True) -> torch.Tensor:
    """Non-negative coefficients below the dtype's smallest normal number set to zero.

    A softmax over many neurons gives the losers coefficients like ``e^{-90}``: subnormal floats,
    on which the CPU's arithmetic is 10–100× slower. Measured on a 2-core Xeon (AVX-512), one
    SoftHebb step of ``softhebb_3l`` at batch 10 in float32: the first layer's ``Σ ỹ xᵀ`` took
    54 ms with 8.5 % of ``ỹ`` subnormal, against 0.7 ms for the same shapes without. Zeroing them
    moves each coefficient by less than ``finfo.tiny`` (1.2e-38 in float32 and bfloat16,
    2.2e-308 in float64), far below the resolution of any sum the statistics hold.

    Args:
        t: non-negative coefficients (a softmax, or its square).
        inplace: write into ``t`` (False where autograd records ``t``'s producer).

    Returns:
        ``t`` (or a new tensor) with every value ``≤ finfo(t.dtype).tiny`` set to 0.

    Examples:
        >>> import torch
        >>> zero_subnormal(torch.tensor([1e-39, 0.5, 2e-38]))
        tensor([0.0000e+00, 5.0000e-01, 2.0000e-38])
    """
    tiny = torch.finfo(t.dtype).tiny
    return F.threshold_(t, tiny, 0.0) if inplace else F.threshold(t, tiny, 0.0)


def winner(t: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """The first neuron of largest value at every sample (dimension 1), as ``t.argmax(dim=1)``.

    ``t.max(dim=1).indices`` returns the same index (the first maximal one; NaN counts as maximal;
    ``tests/test_rules.py`` checks ties and NaN against ``argmax``) and is 1.5–4× faster on the CPU
    for N×C×H×W maps (2 threads, 10×96×32×32: 2.3 → 0.6 ms), where ``argmax`` reduces the
    non-innermost dimension without vectorising.

    Args:
        t: M×N rows or B×N×H'×W' maps.
        keepdim: keep dimension 1 (size 1).

    Returns:
        the winner's index per sample (int64).
    """
    return t.max(dim=1, keepdim=keepdim).indices


def unfold_pays(g: torch.Tensor, weight: torch.Tensor, geometry: Conv2dGeometry) -> bool:
    """Whether :func:`patch_sum` unfolds a convolution's patches instead of calling its
    weight-gradient kernel: on the CPU, without dilation, for maps of at most 4 positions, or of
    at most 64 positions with at least 1024 neurons.

    The rule is fixed (not timed at run time) so that a run's arithmetic does not depend on the
    machine's load. Measured with 2 threads, 3×3 kernels, batch 10 unless said (kernel → unfolded,
    ms, NCHW / channels-last): 384→1536 on 8×8 maps 59 → 47 / 89 → 45; 256→1024 on 8×8 22 → 21 /
    26 → 21; 512→512 on 2×2 15.2 → 2.8 / 20.3 → 3.0, at batch 64 27 → 10 / 33 → 9; 512→512 on
    1×1 13.4 → 0.7. Left to the kernel, where unfolding does not pay: 512→512 on 4×4 (6.9 against
    7.6), 512→512 on 8×8 (30 / 25 against 27 / 28), 192→256 on 3×3 at batch 64 (5.0 against 7.3).

    Args:
        g: the per-sample coefficients, B×N×H'×W'.
        weight: the layer weight, N×C×kh×kw.
        geometry: the convolution's :class:`Conv2dGeometry`.

    Returns:
        True where the unfolded form is used.
    """
    if g.device.type != "cpu" or tuple(geometry.dilation) != (1, 1):
        return False
    positions = g.shape[2] * g.shape[3]
    return positions <= 4 or (positions <= 64 and weight.shape[0] >= 1024)


def unfolded_patch_sum(
    g: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, geometry: Conv2dGeometry, budget: int = 2**20
) -> torch.Tensor:
    """``Σ_b g_b x_bᵀ`` for a convolution (dilation 1) from unfolded patches, one product per chunk of
    images: ``Σ_chunks G_cᵀ X_c`` with X_c the chunk's patches as rows (channels, then kernel rows,
    then columns: the weight's order) and G_c its coefficients, rows in the same (image, position)
    order. A chunk's patches hold about ``budget`` elements (at least one image's): 4 MiB in float32
    by default, so the unfolded patches never take more memory than that at a time (measured: the
    chunk size changes nothing of the time, from one image per chunk to all of them).

    Args:
        g: per-sample coefficients, B×N×H'×W'.
        x: layer input, B×C×H×W.
        weight: the layer weight, N×C×kh×kw (shape only).
        geometry: the convolution's :class:`Conv2dGeometry` (dilation 1).
        budget: elements of unfolded patches per chunk.

    Returns:
        N×C×kh×kw, as :func:`patch_sum`.

    Examples:
        >>> import torch
        >>> x, g, w = torch.randn(3, 4, 5, 5), torch.randn(3, 6, 3, 3), torch.empty(6, 4, 3, 3)
        >>> geometry = Conv2dGeometry((2, 2), (1, 1), (1, 1))
        >>> kernel = torch.ops.aten.convolution_backward(
        ...     g, x, w, None, [2, 2], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]
        >>> torch.allclose(unfolded_patch_sum(g, x, w, geometry, budget=40), kernel, atol=1e-4)
        True
    """
    n, c, kh, kw = weight.shape
    (sh, sw), (ph, pw) = geometry.stride, geometry.padding
    # Channels last, zero padded: each patch is then a C×kh×kw window of a strided view.
    xl = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)
    windows = xl.unfold(1, kh, sh).unfold(2, kw, sw)  # B×H'×W'×C×kh×kw
    rows = g.permute(0, 2, 3, 1)  # B×H'×W'×N
    starts, step = sample_chunks(g.shape[0], windows[0].numel(), budget)
    out = torch.zeros(n, c * kh * kw, dtype=g.dtype, device=g.device) if not starts else None
    for i in starts:
        gc = rows[i : i + step].reshape(-1, n).transpose(0, 1)
        xc = windows[i : i + step].reshape(-1, c * kh * kw)
        out = gc @ xc if out is None else out.addmm_(gc, xc)
    return out.view(n, c, kh, kw)


def take_spare(
    spare: list[torch.Tensor], shape: torch.Size, g: torch.Tensor, x: torch.Tensor
) -> torch.Tensor | None:
    """A spare tensor of ``shape`` and of the dtype and device of ``g·x``, taken out of ``spare``;
    None if there is none, or where autograd records ``g`` or ``x`` (a buffer must not alias a
    graph's input).

    Args:
        spare: tensors free to be overwritten (the statistics a step has just applied).
        shape: the shape wanted.
        g: the left factor of the product to be written.
        x: the right factor.

    Returns:
        The tensor, removed from ``spare``, or None.
    """
    if not spare or (torch.is_grad_enabled() and (g.requires_grad or x.requires_grad)):
        return None
    dtype = torch.promote_types(g.dtype, x.dtype)
    for i, t in enumerate(spare):
        if t.shape == shape and t.dtype == dtype and t.device == g.device and t.is_contiguous():
            return spare.pop(i)
    return None


def patch_sq_norms(x: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """``‖x_b‖²`` for every sample: the squared norm of each input row or patch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, already padded if needed).
        weight: the layer weight (its kernel size, dtype and device are used).
        geometry: ``None`` for Linear, else the convolution's :class:`Conv2dGeometry`.

    Returns:
        M×1 (Linear) or B×1×H'×W' (Conv2d), clamped at 0.
    """
    if geometry is None:
        return torch.linalg.vector_norm(x, dim=1, keepdim=True).square_()
    # Σ_c first, then a one-channel box filter: the same sum as a C-channel kernel of ones, C×
    # fewer multiply-adds.
    ones = torch.ones((1, 1, *weight.shape[2:]), dtype=x.dtype, device=x.device)
    # x² then a sum over channels: the x-sized temporary is cheap next to vector_norm(x, dim=1),
    # which reduces over a strided dimension (measured on 2 CPU cores for a 64×3×32×32 input:
    # 6.3 ms against 0.05 ms; 64×96×14×14: 1.9 against 0.1 ms).
    channel_sq = x.square().sum(1, keepdim=True)
    sq = F.conv2d(channel_sq, ones, None, geometry.stride, geometry.padding, geometry.dilation)
    # Fast convolution algorithms may return tiny negatives for a sum of squares.
    return sq.clamp_min(0)


def neuron_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-neuron vector (N) to broadcast against a pre-activation (neurons on dim 1).

    Args:
        v: a vector of N values.
        like: a tensor with neurons on dimension 1, M×N or B×N×H'×W'.

    Returns:
        ``v`` as 1×N or 1×N×1×1.
    """
    return v.reshape(1, -1, *([1] * (like.dim() - 2)))


def weight_view(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Reshape a per-neuron vector (N) to broadcast against ``weight`` (N×...).

    Args:
        v: a vector of N values.
        weight: N×S or N×C×kh×kw.

    Returns:
        ``v`` as N×1 or N×1×1×1.
    """
    return v.reshape(-1, *([1] * (weight.dim() - 1)))


def sample_dims(u: torch.Tensor) -> list[int]:
    """Every dimension of a pre-activation except the neuron dimension (1).

    Args:
        u: M×N or B×N×H'×W'.

    Returns:
        the dimensions to sum over for a per-neuron total, e.g. ``[0, 2, 3]``.
    """
    return [d for d in range(u.dim()) if d != 1]


def as_rows(y: torch.Tensor) -> torch.Tensor:
    """Pre-activations as an M×N matrix, one row per sample (image × position).

    Args:
        y: M×N (returned as is) or B×N×H'×W'.

    Returns:
        M×N with M = B·H'·W' for a map.
    """
    if y.dim() == 2:
        return y
    return y.movedim(1, -1).reshape(-1, y.shape[1])


def sample_chunks(m: int, per_row: int, budget: int = 2**25) -> tuple[range, int]:
    """How the per-sample references walk ``m`` samples whose terms take ``per_row`` elements each,
    so that a chunk holds about ``budget`` elements: ``(chunk starts, chunk length)``.

    Args:
        m: the samples.
        per_row: elements of one sample's term (e.g. the weight's size).
        budget: elements per chunk.

    Returns:
        ``(range of chunk starts, chunk length)``.

    Examples:
        >>> starts, step = sample_chunks(10, 4, budget=12)
        >>> list(starts), step
        ([0, 3, 6, 9], 3)
    """
    step = max(1, budget // max(per_row, 1))
    return range(0, m, step), step


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
