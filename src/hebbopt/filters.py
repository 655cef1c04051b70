"""Pictures of what Hebbian learning found: a layer's filters as a PNG grid."""

from __future__ import annotations

import math
import os
import pathlib

import torch
from torch import nn
from torchvision.utils import make_grid, save_image


def filter_grid(layer: nn.Module | torch.Tensor, *, max_filters: int = 256, scale: int = 4) -> torch.Tensor:
    """A 3×H×W image of the filters of a Conv2d (or its weight N×C×kh×kw), each normalised to [0, 1].

    Filters with 3 input channels (the first layer of an RGB network) are shown in colour and
    filters with one input channel in grey, one tile per filter in a near-square grid. Other
    filters are shown as a run of grey tiles, one per input channel (at most 16); the runs of
    several filters share a row, a blank tile apart, so that the picture is near square too. Each
    tile is enlarged ``scale`` times with nearest-neighbour pixels.

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
        >>> filter_grid(nn.Conv2d(1, 48, 5)).shape  # 7×7 grey tiles (the last row holds 6)
        torch.Size([3, 148, 148])
        >>> filter_grid(nn.Conv2d(8, 64, 5)).shape  # 3 filters a row (8 tiles each, 2 blanks), 22 rows
        torch.Size([3, 463, 547])
    """
    w = (layer.weight if isinstance(layer, nn.Module) else layer).detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"expected a Conv2d or a 4-d weight, got shape {tuple(w.shape)}")
    w = w[:max_filters]
    if w.shape[1] in (1, 3):
        return make_grid(_normalised(w, scale), nrow=math.ceil(math.sqrt(len(w))), padding=1, pad_value=1.0)
    c = min(w.shape[1], 16)
    tiles = _normalised(w[:, :c].reshape(-1, 1, *w.shape[2:]), scale)  # each channel on its own
    per_row = max(1, min(len(w), round(math.sqrt(len(w) / (c + 1)))))  # filters a row: near square
    if per_row > 1:  # a blank tile after every filter that does not end a row
        blank, parts = torch.ones(1, *tiles.shape[1:]), []
        for i, run in enumerate(tiles.split(c)):
            parts += [run, blank] if (i + 1) % per_row else [run]
        tiles = torch.cat(parts)
    return make_grid(tiles, nrow=per_row * (c + 1) - 1, padding=1, pad_value=1.0)


def _normalised(w: torch.Tensor, scale: int) -> torch.Tensor:
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-12)
    return w.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)


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
