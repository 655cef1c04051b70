r"""Hebbian PCA (HPCA, Sanger's rule), the FastHebb form (paper eq. 2, 7, 8).

Per sample ``b`` and neuron ``n``, with ``y = act(u)``:

    Δw_n = η y_bn (x_b − Σ_{n' ≤ n} y_bn' w_n')                                      (eq. 2)

Averaging over the ``B`` samples (every image × every position) and contracting ``b`` (eq. 8):

    ΔW = (Yᵀ X − tril(Yᵀ Y) W) / B

Sufficient statistics: the Hebbian term ``H = YᵀX − tril(YᵀY)W`` (N×S, a sum over samples,
computed with the weight seen by the forward pass) and the count ``B``.

``tril(YᵀY) W`` has two exact forms, chosen by shape (:func:`prefix_is_cheaper`):

* Gram: ``tril(YᵀY) W`` costs ``B·N² + N²·S`` and O(N²) memory; cheapest when B ≳ N (convs).
* Blocked prefix, when B < N (e.g. 4096-unit Linear layers on a batch of 64): split neurons into
  blocks of ``nb``, let ``C_i = Σ_{j<i} Y_j W_j`` (B×S); rows of block ``i`` are
  ``Y_iᵀ C_i + tril(Y_iᵀ Y_i) W_i``. Cost O(B·N·S), memory O(B·S + N·S). For a Linear layer the
  input X is at hand, so the block's whole Hebbian term is ``Y_iᵀ (X − C_i) − tril(Y_iᵀ Y_i) W_i``
  (the paper's E = X − reconstruction, blocked): YᵀX comes for free.
"""

from __future__ import annotations

import torch
from torch import nn

from hebbopt.rules.base import Hyper, Rule, one_of
from hebbopt.rules.geometry import Geometry, as_rows, patch_sum, patches, sample_chunks, take_spare

ACTIVATIONS = ("relu", "identity")
"""Accepted values of ``activation``."""


def act(u: torch.Tensor, kind: str) -> torch.Tensor:
    """``y = act(u)``: ``"relu"`` (the reference code's nonlinear Sanger rule) or ``"identity"``.

    Args:
        u: pre-activations without bias.
        kind: ``"relu"`` or ``"identity"``.

    Returns:
        ``y``: ``relu(u)``, or ``u`` itself (not a copy) for ``"identity"``.
    """
    return torch.relu(u) if kind == "relu" else u


def prefix_block_size(m: int, n: int) -> int:
    """Neurons per block of the prefix form.

    Small blocks cut the ``tril(Y_iᵀY_i)W_i`` cost (N·nb·S) but run more, smaller products; on 2
    CPU threads 64 was the fastest of 64/96/128/192 for a 4096×2304 layer at B = 16, 64 and 256.

    Args:
        m: number of samples B (not used by the current choice).
        n: number of neurons N.

    Returns:
        ``nb = min(N, 64)``.
    """
    return min(n, 64)


def prefix_is_cheaper(m: int, n: int, s: int) -> bool:
    """Whether the blocked prefix form costs fewer multiply-adds than the Gram form.

    Gram form: ``B·N² + N²·S``; prefix form: ``2·B·N·S + N·nb·(B + S)``.

    Args:
        m: number of samples B (images × positions).
        n: number of neurons N.
        s: inputs per neuron S.

    Returns:
        ``True`` if the prefix form is cheaper (roughly when B < N).

    Examples:
        >>> prefix_is_cheaper(64, 4096, 2304)  # the 4096-unit Linear layer at batch 64
        True
        >>> prefix_is_cheaper(64 * 28 * 28, 96, 75)  # the first convolution: B ≫ N
        False
    """
    nb = prefix_block_size(m, n)
    gram = m * n * n + n * n * s
    prefix = 2 * m * n * s + n * nb * (m + s)
    return prefix < gram


def hebbian_term(
    y: torch.Tensor, x: torch.Tensor | None, w: torch.Tensor, buffer: torch.Tensor | None = None
) -> torch.Tensor:
    """``YᵀX − tril(YᵀY)W`` by blocks (prefix form), or ``−tril(YᵀY)W`` alone if ``x`` is None.

    For blocks ``i`` of ``nb`` neurons, with ``C_i = Σ_{j<i} Y_j W_j`` (B×S), the rows of block
    ``i`` are ``Y_iᵀ (X − C_i) − tril(Y_iᵀ Y_i) W_i``: O(B·N·S) time, O(B·S + N·S) memory.

    Args:
        y: B×N outputs.
        x: B×S inputs, or ``None`` (then only ``−tril(YᵀY)W`` is computed).
        w: N×S weights.
        buffer: an N×S tensor to write the result into (eager only), e.g. statistics a step has
            just applied; None: a new one (for a 4096×2304 layer, 38 MB fresh from the system on
            every step: page faults).

    Returns:
        N×S tensor (``buffer`` when given).

    Examples:
        >>> import torch
        >>> y, x, w = torch.randn(5, 130), torch.randn(5, 7), torch.randn(130, 7)
        >>> gram_form = y.T @ x - torch.tril(y.T @ y) @ w
        >>> torch.allclose(hebbian_term(y, x, w), gram_form, atol=1e-4)
        True
    """
    m, n = y.shape
    nb = prefix_block_size(m, n)
    # e = X − C_i (or −C_i): the input minus the reconstruction by the neurons before block i.
    # A copy, since eager mode updates it in place and x is the layer's own input.
    e = x.clone() if x is not None else torch.zeros(m, w.shape[1], dtype=y.dtype, device=y.device)
    # Decided while tracing: the compiled graph takes the functional branches below.
    compiling = torch.compiler.is_compiling()
    out = None if compiling else (buffer if buffer is not None else y.new_empty(n, w.shape[1]))
    blocks = []
    for i in range(0, n, nb):
        yi, wi = y[:, i : i + nb], w[i : i + nb]
        if compiling:
            # out= into a slice of `out` is functionalised into a copy of the whole N×S buffer
            # per block; separate blocks joined by one cat at the end cost one copy in all.
            blocks.append(torch.addmm(yi.T @ e, torch.tril(yi.T @ yi), wi, alpha=-1))
        else:
            # Eager: the products land straight in the block's rows, with no temporary and no cat.
            block = out[i : i + nb]
            torch.mm(yi.T, e, out=block)
            block.addmm_(torch.tril(yi.T @ yi), wi, alpha=-1)
        if i + nb < n:
            # C_{i+1} = C_i + Y_i W_i. Eager reuses the one B×S buffer; compiled code is written
            # functionally, since the compiler plans its own buffers.
            e = e - yi @ wi if compiling else e.addmm_(yi, wi, alpha=-1)
    return torch.cat(blocks) if compiling else out


def gram(y: torch.Tensor) -> torch.Tensor:
    """``YᵀY`` (N×N) from B×N rows or a B×N×H×W map (batched products, no transposed copy).

    Args:
        y: outputs, B×N rows or a B×N×H×W map (every position a sample).

    Returns:
        the N×N Gram matrix summed over all samples and positions.
    """
    if y.dim() == 2:
        return y.T @ y
    flat = y.flatten(2)
    if flat.shape[2] >= 256:
        # Many positions per image: one N×P @ P×N product per image reads the B×N×P map as it
        # lies; the row form would first copy it, transposed, to B·P×N.
        return torch.bmm(flat, flat.transpose(1, 2)).sum(0)
    # Few positions: many tiny batched products cost more than that copy and one large product.
    rows = as_rows(y)
    return rows.T @ rows


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    activation: str = "relu",
    out: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor | int]:
    """Sufficient statistics of one batch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W, N×S or N×C×kh×kw.
        geometry: ``None`` for Linear, else :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        activation: ``"relu"`` or ``"identity"``.
        out: spare tensors the statistics may be written into (see
            :func:`~hebbopt.rules.geometry.take_spare`).

    Returns:
        ``{"hebb": YᵀX − tril(YᵀY)W (shaped like W), "count": B}``.

    Examples:
        >>> import torch
        >>> from hebbopt.rules import hpca
        >>> w, x = torch.randn(3, 4), torch.randn(10, 4)
        >>> stats = hpca.statistics(x, x @ w.T, w, None)
        >>> stats["hebb"].shape, stats["count"]
        (torch.Size([3, 4]), 10)
    """
    y = act(u, activation)
    n = weight.shape[0]
    m = y.numel() // n
    w = weight.flatten(1)
    if not prefix_is_cheaper(m, n, w.shape[1]):
        # Gram form (B ≳ N, e.g. convolutions): YᵀX as a weight-gradient (no unfolding), and
        # tril(YᵀY)W from the N×N Gram matrix.
        hebb = patch_sum(y, x, weight, geometry, out)
        hebb.sub_((torch.tril(gram(y)) @ w).reshape(weight.shape))
    elif geometry is None:
        # Linear, B < N: the rows of X are at hand, so the blocked form gives YᵀX too, written
        # into the statistics the last step applied when they are spare.
        spare = None if out is None or torch.compiler.is_compiling() else take_spare(out, w.shape, y, x)
        hebb = hebbian_term(y, x, w, spare)
    else:
        # Convolution, B < N (few positions, many channels): X − C_i would need the unfolded
        # patches, so YᵀX stays a weight-gradient and the blocked form gives −tril(YᵀY)W only.
        hebb = patch_sum(y, x, weight, geometry)
        hebb.add_(hebbian_term(as_rows(y), None, w).reshape(weight.shape))
    return {"hebb": hebb, "count": m}


def update(stats: dict[str, torch.Tensor | int], weight: torch.Tensor) -> torch.Tensor:
    """``ΔW = (YᵀX − tril(YᵀY)W) / B`` (eq. 8 without η).

    Args:
        stats: the sums of :func:`statistics` (accumulated over any number of batches).
        weight: the layer weight (unused: the weight entered the statistics already).

    Returns:
        ΔW, shaped like the weight.
    """
    return stats["hebb"] / stats["count"]


def apply_(weight: torch.Tensor, stats: dict[str, torch.Tensor | int], lr: torch.Tensor) -> None:
    """``W ← W + lr·ΔW`` in place, one pass over W.

    Args:
        weight: the weight W to update in place (a detached view of the parameter).
        stats: the sums of :func:`statistics`.
        lr: the learning rate η as a 0-d tensor, so that a compiled ``apply_`` does not
            recompile when a scheduler changes it.
    """
    weight.addcmul_(stats["hebb"], lr / stats["count"])


def bound(absmax: torch.Tensor, stats: dict[str, torch.Tensor | int], lr: torch.Tensor) -> torch.Tensor:
    """An upper bound on ``max|W + lr·ΔW|`` before it is formed: ``max|W| + (|lr|/B)·max|YᵀX − tril(YᵀY)W|``.

    Args:
        absmax: ``max|W|`` as a 0-d float32 tensor.
        stats: the sums of :func:`statistics`.
        lr: the learning rate η as a 0-d tensor.

    Returns:
        the bound as a 0-d float32 tensor; NaN or Inf when any statistic is not finite.
    """
    hebb = stats["hebb"]
    return absmax + (lr.float().abs() / stats["count"]) * _absmax(hebb)


def _absmax(t: torch.Tensor) -> torch.Tensor:
    # one reduction pass; NaN propagates through aminmax
    lo, hi = torch.aminmax(t)
    return torch.maximum(lo.float().abs(), hi.float().abs())


def reference(layer: nn.Module, x: torch.Tensor, *, activation: str = "relu") -> torch.Tensor:
    """Per sample, literally: ΔW = (1/B) Σ_b y_bn (x_b − Σ_{n'≤n} y_bn' w_n') (eq. 2, 4).

    One term per sample on unfolded patches, serialised over chunks of samples; slow on purpose.

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
        >>> torch.allclose(fast, hpca.reference(layer, x), atol=1e-12)
        True
    """
    w = layer.weight.detach().flatten(1)
    xp = patches(layer, x.to(w.dtype))
    y = xp @ w.T
    if activation == "relu":
        y = torch.relu(y)
    delta = torch.zeros_like(w)
    starts, step = sample_chunks(xp.shape[0], w.numel())
    for b0 in starts:
        yb, xb = y[b0 : b0 + step], xp[b0 : b0 + step]
        recon = torch.cumsum(yb[:, :, None] * w[None], dim=1)  # Σ_{n'≤n} y_bn' w_n'
        delta += (yb[:, :, None] * (xb[:, None, :] - recon)).sum(0)
    return (delta / xp.shape[0]).reshape(layer.weight.shape)


RULE = Rule(
    name="hpca",
    summary="Hebbian PCA, Sanger's rule (FastHebb eq. 2, 7, 8)",
    hyper={"activation": Hyper("relu", one_of(*ACTIVATIONS), "activation y = act(u): relu or identity")},
    statistics=statistics,
    update=update,
    apply_=apply_,
    bound=bound,
    reference=reference,
    weight_shaped=frozenset({"hebb"}),
    examples=({"activation": "relu"}, {"activation": "identity"}),
)
