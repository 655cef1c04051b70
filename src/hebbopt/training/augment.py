"""Data augmentation of a whole batch at once, on its own device: random crops and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Each image randomly cropped from its zero-padded self and flipped left-right with probability 1/2.

    The standard CIFAR augmentation (``RandomCrop(size, padding=4)`` then ``RandomHorizontalFlip()``),
    drawn per image with ``generator`` (CPU; offsets in [0, 2·``padding``] on each axis), applied to
    the batch by one gather: no per-image Python work.

    Args:
        x: images, B×C×H×W.
        generator: the random stream (a seeded ``torch.Generator`` on the CPU).
        padding: zero pixels added on each side before cropping back to H×W.

    Returns:
        A new B×C×H×W tensor (same dtype, device and memory format as ``x``).

    Examples:
        >>> from hebbopt.data.seeds import derive_seed
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> y = crop_flip(x, torch.Generator().manual_seed(derive_seed(0, "example")), padding=0)
        >>> y.equal(x) or y.equal(x.flip(3))
        True
    """
    b, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    cols = torch.arange(w)
    cols = torch.where(flip[:, None], cols.flip(0), cols)  # a flip is a reversed column index
    rows = (offsets[0][:, None] + torch.arange(h)).to(x.device)
    cols = (offsets[1][:, None] + cols).to(x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # B×H×W×C
    out = out.permute(0, 3, 1, 2)
    channels_last = (
        x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    )
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
