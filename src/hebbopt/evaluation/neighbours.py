"""k-nearest neighbours and retrieval on frozen features, by cosine similarity.

Similarities are computed a block of queries at a time, so memory stays bounded by
``chunk_size`` × training images. Pure: tensors in, numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hebbopt.evaluation.linear import _check_queries

_ELEMENTS = 1 << 22
"""Default similarity block: about 4 M entries (queries × training images) per chunk."""


def _inverse_norms(x: torch.Tensor) -> torch.Tensor:
    return 1 / x.float().norm(dim=1).clamp_min(1e-12)


def _chunk(chunk_size: int | None, n_train: int) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, _ELEMENTS // max(1, n_train))


def _similarities(train, inv_train, queries, device):
    """Cosine similarities of a block of queries with every training row: Q×N (no normalised copy
    of the training features is made: the matmul is scaled by the inverse norms)."""
    q = queries.to(device, torch.float32)
    q = q * _inverse_norms(q)[:, None]
    return (q @ train.T) * inv_train[None, :]


@torch.no_grad()
def knn(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    k: int | Sequence[int] = 20,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    predictions: bool = False,
) -> dict:
    """k-nearest-neighbour classification on cosine similarity, by majority vote.

    Each test feature is compared with every training feature by cosine similarity (the dot product
    of L2-normalised rows; a zero row has similarity 0 with everything); its k most similar training
    rows vote, one vote each. The class with the most votes wins; a tie between classes goes to the
    one whose best-ranked neighbour is nearer (the tied class met first in the neighbour list),
    which is deterministic. Top-5 ranks the classes the same way (classes without a vote after
    those with one, by class index). ``k`` larger than the training set is cut to its size.
    Neighbours of exactly equal similarity are ordered as ``torch.topk`` orders them.

    Similarities are computed ``chunk_size`` queries at a time (default: about 4 M similarities per
    block), so memory stays bounded; all ``k`` share one neighbour search.

    Args:
        train_x: training (labelled) features, N×D.
        train_y: their classes, N integers.
        test_x: query features, M×D.
        test_y: their classes.
        k: neighbours that vote, or several values of k to evaluate at once.
        num_classes: the classes (default: the largest label seen + 1).
        chunk_size: queries per similarity block (default: ~4 M / N).
        device: where the similarities are computed (default: ``train_x``'s device); ``train_x`` is
            moved there once if it is elsewhere.
        predictions: also return each query's predicted class.

    Returns:
        For an integer ``k``: ``{"top1", "top5", "images", "k"}`` (accuracies in %), with
        ``"predictions"`` (an int64 tensor of M classes) when asked; for a sequence: ``{k: that
        dict}`` for each k.

    Raises:
        ValueError: features and labels that do not match, no training features, or a k < 1.
        FloatingPointError: features that are not finite (train or test, named).
    """
    _check_queries(train_x, train_y, test_x, test_y)
    ks = [k] if isinstance(k, int) else [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    device = torch.device(device) if device is not None else train_x.device
    n = len(train_x)
    classes = int(num_classes if num_classes is not None else max(int(train_y.max()), int(test_y.max())) + 1)
    train = train_x.to(device, torch.float32)
    inv = _inverse_norms(train)
    labels = train_y.to(device).long()
    k_max = min(max(ks), n)
    hits = {v: torch.zeros(2, dtype=torch.float64) for v in ks}
    preds = {v: [] for v in ks}
    step = _chunk(chunk_size, n)
    for start in range(0, len(test_x), step):
        sim = _similarities(train, inv, test_x[start : start + step], device)
        near = labels[sim.topk(k_max, dim=1).indices]  # Q×k_max classes, most similar first
        truth = test_y[start : start + step].to(device).long()
        for v in ks:
            top = _vote(near[:, : min(v, n)], classes)
            preds[v].append(top[:, 0].cpu())
            match = top == truth[:, None]
            hits[v] += torch.stack([match[:, 0].sum(), match.any(1).sum()]).double().cpu()
    m = max(1, len(test_x))
    out = {}
    for v in ks:
        out[v] = {"top1": 100 * hits[v][0].item() / m, "top5": 100 * hits[v][1].item() / m,
                  "images": len(test_x), "k": min(v, n)}  # fmt: skip
        if predictions:
            out[v]["predictions"] = torch.cat(preds[v]) if preds[v] else torch.zeros(0, dtype=torch.long)
    return out[k] if isinstance(k, int) else out


def _vote(near: torch.Tensor, classes: int) -> torch.Tensor:
    """The classes ranked by votes (ties: nearest first neighbour, then class index): Q×min(5, C)."""
    q, k = near.shape
    counts = torch.zeros(q, classes, dtype=torch.long, device=near.device)
    counts.scatter_add_(1, near, torch.ones_like(near))
    first = torch.full((q, classes), k, dtype=torch.long, device=near.device)
    rank = torch.arange(k, device=near.device).expand(q, k)
    first.scatter_reduce_(1, near, rank, reduce="amin")
    index = torch.arange(classes, device=near.device)
    # votes dominate (a vote is worth more than any rank difference), then the first rank, then the index
    score = (counts * (k + 1) - first) * classes + (classes - 1 - index)
    return score.topk(min(5, classes), dim=1).indices


@torch.no_grad()
def retrieval(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    ks: Sequence[int] = (10, 50, 100),
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Image retrieval: each test feature queries the training set, ranked by cosine similarity.

    A training item is relevant to a query when it has the query's class. For each query,
    precision@k is the share of relevant items among the k most similar (k cut to the training
    set's size), and the average precision (AP) is the mean, over the relevant items, of the
    precision at each one's rank in the full ranking:
    ``AP = (1/R) Σ_{i relevant} (relevant items in the top i) / i`` with R relevant items (what
    ``sklearn.metrics.average_precision_score`` gives when no two similarities are equal). mAP is
    the mean AP over the queries that have at least one relevant item; precision@k is averaged over
    every query. Items of exactly equal similarity keep their training order. Computed
    ``chunk_size`` queries at a time (default: about 4 M similarities per block).

    Args:
        train_x: the searched features, N×D.
        train_y: their classes.
        test_x: the query features, M×D.
        test_y: their classes.
        ks: the k of precision@k.
        chunk_size: queries per block (default: ~4 M / N).
        device: where the similarities are computed (default: ``train_x``'s device).

    Returns:
        ``{"map": %, "p@<k>": % for each k, "queries": M, "queries_with_relevant": n}``.

    Raises:
        ValueError: features and labels that do not match, no training features, or a k < 1.
        FloatingPointError: features that are not finite (train or test, named).
    """
    _check_queries(train_x, train_y, test_x, test_y)
    ks = [int(v) for v in ks]
    if ks and min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    device = torch.device(device) if device is not None else train_x.device
    n = len(train_x)
    train = train_x.to(device, torch.float32)
    inv = _inverse_norms(train)
    labels = train_y.to(device).long()
    ap_sum, with_relevant = 0.0, 0
    precision = {v: 0.0 for v in ks}
    ranks = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    step = _chunk(chunk_size, n)
    for start in range(0, len(test_x), step):
        sim = _similarities(train, inv, test_x[start : start + step], device)
        order = sim.argsort(dim=1, descending=True, stable=True)
        truth = test_y[start : start + step].to(device).long()
        relevant = labels[order] == truth[:, None]
        del order, sim
        found = relevant.cumsum(1)
        total = found[:, -1]
        ap = (relevant * (found / ranks)).sum(1) / total.clamp_min(1)
        ap_sum += ap[total > 0].sum().item()
        with_relevant += int((total > 0).sum())
        for v in ks:
            c = min(v, n)
            precision[v] += (found[:, c - 1].double() / c).sum().item()
    m = max(1, len(test_x))
    out = {"map": 100 * ap_sum / max(1, with_relevant)}
    out |= {f"p@{v}": 100 * precision[v] / m for v in ks}
    return out | {"queries": len(test_x), "queries_with_relevant": with_relevant}
