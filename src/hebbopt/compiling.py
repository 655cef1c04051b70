"""``torch.compile`` for the rules' ``statistics`` and ``apply_`` (in-place update) functions.

Each distinct layer shape and geometry is one statistics graph, compiled once on first use (about
5-15 s a graph on 2 CPU cores). Stable shapes never recompile. A whole network has more layer
shapes than dynamo's default recompile limit (8 graphs per function), so the limit is raised for
these calls only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

RECOMPILE_LIMIT = 256
"""Graphs per compiled function before dynamo gives up (its default, 8, is fewer than a network's
layer shapes); raised only inside the calls of :func:`compiled`."""


def resolve(mode: bool | str, device: torch.device) -> bool:
    """Whether to compile: ``True``/``False``, or ``"auto"`` = compile on CUDA only.

    ``"auto"`` stays eager on the CPU for every rule, measured on 2 cores (docs/benchmarks.md, "Every
    rule, after the rules registry"; × an SGD step, eager / compiled): SWTA 0.72 / 0.84, HPCA
    0.92 / 1.03, SoftHebb 0.67 / 0.72, Krotov 0.72 / 0.72: inductor allocates its own buffers on
    every call, so the in-place kernels lose their advantage. Oja alone is faster compiled (0.95 /
    0.73), but each new layer shape costs a compilation of about 15 s on 2 cores, more than a
    short run saves; ``compile=True`` asks for it.

    Args:
        mode: the optimizer's ``compile`` argument.
        device: the device of the tensors about to be processed.

    Returns:
        whether to run the compiled function.

    Examples:
        >>> import torch
        >>> cpu, cuda = torch.device("cpu"), torch.device("cuda")
        >>> resolve("auto", cpu), resolve("auto", cuda), resolve(True, cpu)
        (False, True, True)
    """
    if mode == "auto":
        return device.type == "cuda"
    return bool(mode)


@functools.cache
def compiled(fn: Callable, dynamic: bool = False) -> Callable:
    """``fn`` compiled with ``fullgraph=True`` (no graph breaks allowed), cached per ``fn``.

    Args:
        fn: the function to compile (a rule's ``apply_``, or
            :func:`hebbopt.capture.batch_statistics`).
        dynamic: ``False`` for statistics (convolutions and matmuls, best specialised per shape);
            ``True`` for ``apply_`` (element-wise, one graph per weight rank; a new learning rate,
            passed as a 0-d tensor, or a new sample count ``B`` does not recompile).

    Returns:
        a wrapper that calls the compiled ``fn`` with dynamo's recompile limit raised to
        :data:`RECOMPILE_LIMIT` (one graph per layer shape; a network has more than 8).
    """
    graph = torch.compile(fn, fullgraph=True, dynamic=dynamic)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch._dynamo.config.patch(
            recompile_limit=RECOMPILE_LIMIT, accumulated_recompile_limit=4 * RECOMPILE_LIMIT
        ):
            return graph(*args, **kwargs)

    return run
