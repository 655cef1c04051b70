"""Labelled subsets ("s % sample-efficiency regimes") and the validation split.

For a seed, each class's indices are shuffled once; a regime takes a prefix of that order, so the
subsets are deterministic, identical across methods, and nested (the 1 % subset lies inside the
5 % one). Class-balanced by default: each class contributes s % of its own images (at least one),
the largest-remainder rule making the total round(s % · n). The draws are the named random
streams ``"labelled"`` and ``"validation"`` of the seed (:func:`~hebbopt.data.seeds.derive_seed`).
"""

from __future__ import annotations

import math

import torch

from hebbopt.data.seeds import derive_seed

REGIMES = (1, 2, 3, 4, 5, 10, 25, 100)
"""The paper's regimes s: the percentages of the training set labelled (FastHebb Table 2)."""


def _check_percent(percent: float) -> float:
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise TypeError(f"percent must be a number in (0, 100], got {percent!r}")
    if math.isnan(percent) or not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100] (the share of labelled images), got {percent}")
    return float(percent)


def _per_class_counts(sizes: list[int], total: int) -> list[int]:
    """Largest-remainder apportionment of ``total`` over classes of ``sizes``, at least 1 each."""
    n = sum(sizes)
    exact = [total * s / n for s in sizes]
    counts = [min(s, max(1, math.floor(e))) for s, e in zip(sizes, exact, strict=True)]
    order = sorted(range(len(sizes)), key=lambda c: exact[c] - math.floor(exact[c]), reverse=True)
    for c in order:
        if sum(counts) >= total:
            break
        if counts[c] < sizes[c]:
            counts[c] += 1
    return counts


def labelled_subset(
    labels: torch.Tensor,
    percent: float,
    seed: int,
    *,
    balanced: bool = True,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the labelled ``percent`` % of a training set, sorted.

    Args:
        labels: class of each training image (1-D integer tensor).
        percent: share labelled, in (0, 100].
        seed: the draw (the stream ``derive_seed(seed, "labelled")``); the same seed gives the
            same subset for every method.
        balanced: each class contributes ``percent`` % of its images (at least one); if False, a
            plain random subset of round(``percent`` % · n) images (the paper's setting).
        exclude: indices never drawn (the validation split); ``percent`` is of the remaining images.

    Returns:
        A sorted 1-D int64 tensor of indices into ``labels``.

    Raises:
        TypeError: ``percent`` is not a number, or ``seed`` not an integer.
        ValueError: ``percent`` outside (0, 100], or ``labels`` not a 1-D integer tensor.

    Examples:
        >>> y = torch.arange(10).repeat(100)          # 1000 images, 10 classes
        >>> idx = labelled_subset(y, 5, seed=0)
        >>> len(idx), torch.bincount(y[idx]).tolist()
        (50, [5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
        >>> bool(torch.isin(labelled_subset(y, 1, seed=0), idx).all())   # nested
        True
    """
    return _draw(labels, _check_percent(percent), derive_seed(seed, "labelled"), balanced, exclude)


def _draw(
    labels: torch.Tensor, percent: float, generator_seed: int, balanced: bool, exclude: torch.Tensor | None
) -> torch.Tensor:
    """The subset of :func:`labelled_subset`, drawn by a generator seeded with ``generator_seed``."""
    if labels.ndim != 1 or labels.dtype.is_floating_point:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    pool = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        pool[exclude] = False
    available = torch.nonzero(pool).flatten()
    total = max(1, round(len(available) * percent / 100))
    g = torch.Generator().manual_seed(generator_seed)
    if not balanced:
        return available[torch.randperm(len(available), generator=g)[:total]].sort().values
    pool_labels = labels[available]
    classes = torch.unique(pool_labels).tolist()
    members = [available[pool_labels == c] for c in classes]
    orders = [m[torch.randperm(len(m), generator=g)] for m in members]
    counts = _per_class_counts([len(m) for m in members], total)
    return torch.cat([o[:k] for o, k in zip(orders, counts, strict=True)]).sort().values


def validation_split(labels: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """A held-out split of exactly ``size`` training images, for early stopping.

    Class-balanced when ``size`` is at least the number of classes, and fixed by ``seed`` (the
    recipes use 0, so every method and regime validates on the same images). Pass it as ``exclude``
    to :func:`labelled_subset` so that no labelled image is also a validation image.

    Args:
        labels: class of each training image (1-D integer tensor).
        size: images held out, in [0, ``len(labels)``); 0 gives an empty split.
        seed: the draw (the stream ``derive_seed(seed, "validation")``); independent of the
            labelled subsets drawn with the same seed.

    Returns:
        A sorted 1-D int64 tensor of ``size`` indices into ``labels``.

    Raises:
        ValueError: ``size`` is negative, or not smaller than the number of images.

    Examples:
        >>> y = torch.arange(10).repeat(100)          # 1000 images, 10 classes
        >>> val = validation_split(y, 50)
        >>> len(val), torch.bincount(y[val]).tolist()
        (50, [5, 5, 5, 5, 5, 5, 5, 5, 5, 5])
        >>> rest = labelled_subset(y, 100, seed=0, exclude=val)
        >>> len(rest), bool(torch.isin(rest, val).any())
        (950, False)
    """
    if size < 0 or size >= len(labels):
        raise ValueError(f"validation size must be in [0, {len(labels)}) (training images), got {size}")
    if size == 0:
        return torch.zeros(0, dtype=torch.long)
    balanced = size >= len(torch.unique(labels))  # else at least one per class would exceed size
    return _draw(labels, 100 * size / len(labels), derive_seed(seed, "validation"), balanced, None)
