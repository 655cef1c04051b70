"""Named random streams: every seed a recipe uses is derived from ``(run.seed, purpose)``.

One function, :func:`derive_seed`, replaces ad-hoc seed arithmetic (``seed * 1_000_003 + epoch``,
``seed + 7919``): each stream is named by what it draws (``"init"``, ``"labelled"``,
``"pretrain/order/stage0/epoch3"``, ...), streams of different names or seeds are independent,
and the value is the same in every process, run and Python version (a hash of the bytes, not
Python's salted ``hash()``).
"""

from __future__ import annotations

import hashlib
import operator


def derive_seed(seed: int, purpose: str) -> int:
    """The seed of the random stream ``purpose`` of a run seeded with ``seed``.

    Args:
        seed: the run's seed (``run.seed``; any integer, NumPy's too).
        purpose: what the stream draws, e.g. ``"init"`` or ``"finetune/order/epoch2"``.

    Returns:
        An integer in [0, 2⁶³): the first 8 bytes of BLAKE2b of ``"<seed>/<purpose>"``, for
        ``torch.manual_seed`` or ``torch.Generator().manual_seed``.

    Raises:
        TypeError: ``seed`` is not an integer, or ``purpose`` not a string.
        ValueError: ``purpose`` is empty.

    Examples:
        >>> derive_seed(0, "init") == derive_seed(0, "init")
        True
        >>> len({derive_seed(0, "init"), derive_seed(1, "init"), derive_seed(0, "labelled")})
        3
    """
    try:
        if isinstance(seed, bool):
            raise TypeError
        seed = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed must be an integer, got {seed!r}") from None
    if not isinstance(purpose, str):
        raise TypeError(f"purpose must be a string naming the stream, got {purpose!r}")
    if not purpose:
        raise ValueError("purpose must name the stream, e.g. 'init'")
    digest = hashlib.blake2b(f"{seed}/{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
