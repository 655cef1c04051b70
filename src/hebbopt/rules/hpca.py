r"""Hebbian PCA (HPCA, Sanger's rule), the FastHebb form (paper eq. 2, 7, 8).

Per sample ``b`` and neuron ``n``, with ``y = act(u)``:

    Δw_n = η y_bn (x_b − Σ_{n' ≤ n} y_bn' w_n')                                      (eq. 2)

Averaging over the ``B`` samples (every image × every position) and contracting ``b`` (eq. 8):

    ΔW = (Yᵀ X − tril(Yᵀ Y) W) / B

Sufficient statistics: ``Yᵀ X`` (N×S), the reconstruction term ``tril(YᵀY) W`` (N×S, computed
with the weight seen by the forward pass) and the count ``B``.

The reconstruction term has two exact forms, chosen by shape (:func:`reconstruction`):

* Gram: ``tril(YᵀY) W`` costs ``B·N² + N²·S`` and O(N²) memory; cheapest when B ≥ N (convs).
* Blocked prefix (when B < N, e.g. 4096-unit Linear layers): split neurons into K blocks,
  ``Z_j = Y_j W_j`` (B×S), ``C_i = Σ_{j<i} Z_j``, then rows of block i are
  ``Y_iᵀ C_i + tril(Y_iᵀ Y_i) W_i``. Cost O(B·N·S), memory O(N·S).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hebbopt.rules.geometry import Geometry, as_rows, patch_sum

ACTIVATIONS = ("relu", "identity")
_MIN_BLOCK = 64


def activation(u: torch.Tensor, kind: str) -> torch.Tensor:
    """``y = act(u)``: ``"relu"`` (the reference code's nonlinear Sanger rule) or ``"identity"``."""
    return torch.relu(u) if kind == "relu" else u


def prefix_block_size(m: int, n: int) -> int:
    """Block size of the prefix form: ≥ B keeps the K·B×S buffers within O(N·S) memory."""
    return min(n, max(m, _MIN_BLOCK))


def prefix_is_cheaper(m: int, n: int, s: int) -> bool:
    """Whether the blocked prefix form costs fewer multiply-adds than the Gram form."""
    nb = prefix_block_size(m, n)
    gram = m * n * n + n * n * s
    prefix = 2 * m * n * s + n * nb * (m + s)
    return prefix < gram


def reconstruction(y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``tril(YᵀY) W`` for ``Y`` (B×N) and ``W`` (N×S), in the cheaper exact form."""
    m, n = y.shape
    s = w.shape[1]
    if not prefix_is_cheaper(m, n, s):
        return torch.tril(y.transpose(0, 1) @ y) @ w
    nb = prefix_block_size(m, n)
    k = -(-n // nb)
    pad = k * nb - n
    # Zero neurons appended to fill the last block contribute nothing and are cut off below.
    yb = F.pad(y, (0, pad)).reshape(m, k, nb).transpose(0, 1)  # K×B×nb
    wb = F.pad(w, (0, 0, 0, pad)).reshape(k, nb, s)  # K×nb×S
    z = torch.bmm(yb, wb)  # Z_j = Y_j W_j, K×B×S
    # Exclusive prefix sum C_i = Σ_{j<i} Z_j, without the cancellation of cumsum(Z) − Z.
    c = torch.cat([torch.zeros_like(z[:1]), torch.cumsum(z[:-1], dim=0)], dim=0)
    ybt = yb.transpose(1, 2)  # K×nb×B
    r = torch.bmm(ybt, c) + torch.bmm(torch.tril(torch.bmm(ybt, yb)), wb)
    return r.reshape(k * nb, s)[:n]


def statistics(
    x: torch.Tensor,
    u: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    *,
    activation_kind: str = "relu",
) -> dict[str, torch.Tensor | int]:
    """Sufficient statistics of one batch.

    Args:
        x: layer input, M×S (Linear) or B×C×H×W (Conv2d, padded as ``geometry`` expects).
        u: pre-activation ``w·x`` without bias, M×N or B×N×H'×W'.
        weight: the layer weight W, N×S or N×C×kh×kw.
        geometry: ``None`` for Linear, else :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        activation_kind: ``"relu"`` or ``"identity"``.

    Returns:
        ``{"yx": YᵀX, "recon": tril(YᵀY)W (both shaped like W), "count": B}``.
    """
    y = activation(u, activation_kind)
    rows = as_rows(y)
    recon = reconstruction(rows, weight.flatten(1)).reshape(weight.shape)
    return {"yx": patch_sum(y, x, weight, geometry), "recon": recon, "count": rows.shape[0]}


def update(stats: dict[str, torch.Tensor | int], weight: torch.Tensor) -> torch.Tensor:
    """``ΔW = (YᵀX − tril(YᵀY)W) / B`` (eq. 8 without η)."""
    return (stats["yx"] - stats["recon"]) / stats["count"]
