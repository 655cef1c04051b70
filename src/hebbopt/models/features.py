"""Which intermediate feature maps ``forward_intermediates`` takes (timm's convention)."""

from __future__ import annotations

from collections.abc import Sequence


def take_indices(num_features: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """The absolute indices of the feature maps to take, as timm's ``forward_intermediates`` reads them.

    Args:
        num_features: how many feature maps (blocks) the model has.
        indices: None (all), an int n (the last n), or a sequence of indices (negative ones count
            from the end).

    Returns:
        ``(indices, largest)``: the absolute indices in the given order, and the largest of them.

    Raises:
        ValueError: an index or count out of range, or no index at all.
    """
    if indices is None:
        indices = num_features
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {num_features})")
        take = list(range(num_features - indices, num_features))
    else:
        take = []
        for i in indices:
            idx = num_features + i if i < 0 else i
            if not 0 <= idx < num_features:
                raise ValueError(f"feature index {i} is out of range (0 to {num_features - 1})")
            take.append(idx)
        if not take:
            raise ValueError("no feature index given")
    return take, max(take)
