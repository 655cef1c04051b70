"""Pictures of what Hebbian learning found: a layer's filters as a PNG grid."""

from __future__ import annotations

import os
import pathlib

import torch
from torch import nn
from torchvision.utils import make_grid, save_image


def filter_grid(layer: nn.Module | torch.Tensor, *, max_filters: int = 256, scale: int = 4) -> torch.Tensor:
    """A 3×H×W image of the filters of a Conv2d (or its weight N×C×kh×kw), each normalised to [0, 1].

    Filters with 3 input channels (the first layer of an RGB network) are shown in colour, one
    tile per filter; other filters as one grey tile per input channel, a row per filter (at most
    16 channels). Each tile is enlarged ``scale`` times with nearest-neighbour pixels.

    Args:
        layer: an ``nn.Conv2d`` (or any module with a 4-d ``weight``), or the weight itself.
        max_filters: show at most this many filters (the first ones).
        scale: enlargement of every tile.

    Returns:
        a 3×H×W float image in [0, 1] (as ``torchvision.utils.make_grid`` returns).

    Raises:
        ValueError: not a 4-d convolution weight.

    Examples:
        >>> import torch.nn as nn
        >>> filter_grid(nn.Conv2d(3, 16, 5)).shape  # 4×4 colour tiles of 5·4 px, 1 px between and around
        torch.Size([3, 85, 85])
    """
    w = (layer.weight if isinstance(layer, nn.Module) else layer).detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"expected a Conv2d or a 4-d weight, got shape {tuple(w.shape)}")
    w = w[:max_filters]
    if w.shape[1] == 3:
        tiles, per_row = w, int(len(w) ** 0.5 + 0.999)
    else:
        c = min(w.shape[1], 16)
        tiles, per_row = w[:, :c].reshape(-1, 1, *w.shape[2:]), c
    lo = tiles.amin(dim=(1, 2, 3), keepdim=True)
    hi = tiles.amax(dim=(1, 2, 3), keepdim=True)
    tiles = (tiles - lo) / (hi - lo).clamp_min(1e-12)
    tiles = tiles.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return make_grid(tiles, nrow=per_row, padding=1, pad_value=1.0)


def save_filters(layer: nn.Module | torch.Tensor, path: str | os.PathLike, **kwargs) -> pathlib.Path:
    """Write :func:`filter_grid` of ``layer`` as a PNG file (parent folders are created).

    Args:
        layer: an ``nn.Conv2d`` or its 4-d weight.
        path: the PNG file to write.
        **kwargs: ``max_filters`` and ``scale`` of :func:`filter_grid`.

    Returns:
        the path written.

    Raises:
        ValueError: not a 4-d convolution weight.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(filter_grid(layer, **kwargs), path)
    return path
