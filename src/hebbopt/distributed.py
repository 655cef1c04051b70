"""Sum the sufficient statistics over processes before an update.

Hebbian updates never pass through ``loss.backward()``, so DDP's gradient all-reduce never sees
them: without this, N processes would train N different models. Because the statistics are sums,
all-reducing them (SUM) gives every rank the statistics of the global batch, and every rank then
applies the same update: N processes × batch b are exactly one process × batch N·b (up to the
order of floating-point additions).

Per ``step()``: one small all-reduce checks that every rank holds statistics for the same layers
and shapes (so a mismatch raises the same clear error on every rank instead of hanging or mixing
tensors); one all-reduce per dtype sums every layer's tensors as a single flattened bucket; one
int64 all-reduce sums the sample counts, if the rule has any.
"""

from __future__ import annotations

import zlib

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether a default process group with more than one process is initialised.

    Returns:
        ``True`` under ``torchrun`` / ``accelerate launch`` with 2 or more processes.
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _manifest(layers: list[tuple[str, dict | None]]) -> str:
    """E.g. ``"conv:count#,hebb(4, 3);fc:-"``: every layer's keys and shapes (``-``: nothing pending)."""
    parts = []
    for name, stats in layers:
        if stats is None:
            parts.append(f"{name}:-")
        else:
            keys = ",".join(
                f"{k}{tuple(v.shape) if isinstance(v, torch.Tensor) else '#'}"
                for k, v in sorted(stats.items())
            )
            parts.append(f"{name}:{keys}")
    return ";".join(parts)


def all_reduce_statistics(layers: list[tuple[str, dict | None]], device: torch.device) -> None:
    """Sum, in place, the statistics of ``layers`` over all processes of the default group.

    Args:
        layers: ``(name, stats or None)`` of every hooked layer, in optimizer order.
        device: device of the small check and count tensors (the optimizer passes its first
            hooked weight's device; NCCL needs CUDA tensors, gloo takes CPU ones).

    Raises:
        ValueError: the ranks' hooked layers, pending statistics or shapes differ (raised on every
            rank; nothing is reduced).
    """
    text = _manifest(layers)
    pending = [stats for _, stats in layers if stats is not None]
    numel = sum(v.numel() for s in pending for v in s.values() if isinstance(v, torch.Tensor))
    fingerprint = [len(layers), len(pending), zlib.crc32(text.encode()), numel]
    header = torch.tensor(fingerprint + [-f for f in fingerprint], dtype=torch.int64, device=device)
    dist.all_reduce(header, op=dist.ReduceOp.MAX)
    high, low = header[:4], -header[4:]
    if not torch.equal(high, low):
        raise ValueError(
            f"Hebbian statistics differ across processes (rank {dist.get_rank()} has {text!r}). Every "
            "process must hook the same layers and run its forward passes before each step()."
        )
    if not pending:
        return
    tensors = [v for s in pending for _, v in sorted(s.items()) if isinstance(v, torch.Tensor)]
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        group = [t for t in tensors if t.dtype == dtype]
        bucket = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(bucket, op=dist.ReduceOp.SUM)
        for t, part in zip(group, bucket.split([t.numel() for t in group]), strict=True):
            t.copy_(part.view_as(t))
    counts = [(s, k) for s in pending for k, v in sorted(s.items()) if not isinstance(v, torch.Tensor)]
    if counts:
        total = torch.tensor([s[k] for s, k in counts], dtype=torch.int64, device=device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        for (s, k), v in zip(counts, total.tolist(), strict=True):
            s[k] = v
