"""Forward hooks, and the pure functions that turn a layer's activations into a rule's statistics.

Data flows one way: forward → :class:`CaptureHook` → the optimizer's receiver (the one interface:
``receive(layer, x, output)``, a bound method the hook holds weakly) → :func:`batch_statistics` →
:func:`accumulate` into the optimizer's state → ``step()``. This module knows nothing of the
optimizer's insides.

A hook runs right after the layer's forward, only in training mode (``module.training``), under
``torch.no_grad()`` and with autocast off. The statistics are computed from the layer input ``x``
and the pre-activation ``u = output − bias`` at once and no reference to either is kept. Half and
bfloat16 activations are promoted to float32 first, so statistics are always float32 or wider.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hebbopt.rules.geometry import Conv2dGeometry, Geometry


def conv_geometry(module: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, Conv2dGeometry]:
    """The input as the rule sees it and the geometry of symmetric zero padding.

    Padding modes other than zeros, and asymmetric ``padding="same"``, are applied here exactly
    as ``nn.Conv2d.forward`` applies them (``F.pad`` by ``_reversed_padding_repeated_twice``).

    Args:
        module: the convolution.
        x: its batched input B×C×H×W.

    Returns:
        ``(x, geometry)``: the input, padded here if the padding is not symmetric zeros, and the
        :class:`~hebbopt.rules.geometry.Conv2dGeometry` that the rule applies to it.

    Examples:
        >>> import torch, torch.nn as nn
        >>> conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")
        >>> x, geometry = conv_geometry(conv, torch.randn(2, 3, 8, 8))
        >>> tuple(x.shape), geometry.padding  # reflect-padded here, no padding left for the rule
        ((2, 3, 10, 10), (0, 0))
    """
    padding = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        left, right, top, bottom = module._reversed_padding_repeated_twice
        if module.padding_mode == "zeros" and left == right and top == bottom:
            padding = (top, left)
        else:
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
            padding = (0, 0)
    return x, Conv2dGeometry(tuple(module.stride), tuple(padding), tuple(module.dilation))


def batch_statistics(
    statistics: Callable,
    x: torch.Tensor,
    output: torch.Tensor,
    bias: torch.Tensor | None,
    weight: torch.Tensor,
    geometry: Geometry,
    hyper: dict,
    state: dict | None = None,
    out: list[torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> dict:
    """``statistics(x, u, W, geometry[, state], **hyper)`` with ``u = output − bias`` in ≥ float32.

    Inputs, outputs and the weight are cast to a common dtype of at least float32 (float64 stays
    float64), or to ``dtype`` when given (e.g. ``torch.bfloat16``: the rule's products in bf16,
    each accumulating in float32 inside the kernel but rounded to bf16 once per batch; the
    results are returned in float32, so that the sums over batches accumulate in float32). A
    Linear layer's inputs of any shape ``(*, S)`` are flattened to rows.

    Args:
        statistics: a rule's ``statistics`` function, e.g. :func:`hebbopt.rules.swta.statistics`.
        x: the layer input (padded for a convolution as ``geometry`` expects).
        output: the layer output (bias included).
        bias: the layer bias, or ``None``.
        weight: the layer weight (detached).
        geometry: ``None`` for Linear, else the convolution's
            :class:`~hebbopt.rules.geometry.Conv2dGeometry`.
        hyper: keyword arguments of ``statistics`` (see :meth:`hebbopt.rules.Rule.kernel_kwargs`).
        state: the layer's state for a rule that keeps one (passed after ``geometry``), else
            ``None``.
        out: spare tensors for a rule whose ``statistics`` takes ``out`` (passed as ``out=``),
            else ``None`` (not passed).
        dtype: the dtype the rule computes in (default: at least float32, see above).

    Returns:
        the rule's statistics of this batch (floating tensors in at least float32).
    """
    inputs = rule_inputs(x, output, bias, weight, geometry, dtype)
    if out is not None and dtype is None:
        hyper = {**hyper, "out": out}
    args = (*inputs, geometry) if state is None else (*inputs, geometry, state)
    stats = statistics(*args, **hyper)
    if dtype is None:
        return stats
    wide = {
        k: torch.promote_types(v.dtype, torch.float32)
        for k, v in stats.items()
        if isinstance(v, torch.Tensor)
    }
    return {k: v.to(wide[k]) if k in wide and v.is_floating_point() else v for k, v in stats.items()}


def rule_inputs(
    x: torch.Tensor,
    output: torch.Tensor,
    bias: torch.Tensor | None,
    weight: torch.Tensor,
    geometry: Geometry,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, u, weight)`` as a rule takes them (see :func:`batch_statistics`).

    Args:
        x: the layer input (batched, padded for a convolution as ``geometry`` expects).
        output: the layer output (bias included).
        bias: the layer bias, or ``None``.
        weight: the layer weight (detached).
        geometry: ``None`` for Linear, else the convolution's geometry.
        dtype: the dtype of the three (default: their common dtype, at least float32).

    Returns:
        the three in one dtype, Linear rows flattened, ``u = output − bias``.
    """
    if dtype is None:
        dtype = torch.promote_types(torch.promote_types(x.dtype, output.dtype), torch.float32)
        dtype = torch.promote_types(dtype, weight.dtype)
    x, output, weight = x.to(dtype), output.to(dtype), weight.to(dtype)
    if geometry is None:
        x = x.reshape(-1, weight.shape[1])
        output = output.reshape(-1, weight.shape[0])
    u = output if bias is None else output - bias.to(dtype).reshape(1, -1, *([1] * (output.dim() - 2)))
    return x, u, weight


def layer_inputs(
    module: nn.Module, x: torch.Tensor, output: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, Geometry]:
    """``(x, output, geometry)``: batched, and padded for a convolution as the rule expects.

    Args:
        module: the hooked ``nn.Linear`` or ``nn.Conv2d``.
        x: the input of its forward call.
        output: the output of that call.

    Returns:
        the input and output (an unbatched C×H×W call gets a batch dimension) and the geometry
        (``None`` for Linear).
    """
    if isinstance(module, nn.Linear):
        return x, output, None
    if x.dim() == 3:  # unbatched C×H×W input
        x, output = x.unsqueeze(0), output.unsqueeze(0)
    x, geometry = conv_geometry(module, x)
    return x, output, geometry


def accumulate(total: dict | None, stats: dict) -> dict:
    """Add one batch's statistics into the running sums (in place where they are tensors).

    Because every statistic is a sum over samples, k batches accumulated give exactly the
    statistics of their concatenation (up to the order of floating-point additions).

    Args:
        total: the running sums, or ``None`` before the first batch.
        stats: one batch's statistics.

    Returns:
        the running sums (``total`` itself, updated, or a shallow copy of ``stats``).

    Examples:
        >>> import torch
        >>> total = accumulate(None, {"r": torch.ones(2), "count": 3})
        >>> accumulate(total, {"r": torch.ones(2), "count": 5})
        {'r': tensor([2., 2.]), 'count': 8}
    """
    if total is None:
        return dict(stats)
    for key, value in stats.items():
        if isinstance(value, torch.Tensor):
            total[key].add_(value)
        else:
            total[key] = total[key] + value
    return total


class CaptureHook:
    """The forward hook of one layer: hands ``(layer, input, output)`` to the receiver that hooked it.

    It holds only weak references (the receiver is a bound method of the optimizer, held with
    ``weakref.WeakMethod``), so a dropped optimizer neither stays alive nor captures. A deep copy
    or a pickle of a hooked model (``copy.deepcopy(model)``, ``torch.save(model)``) gets a
    :class:`DroppedHook` in its place: the copy is a plain model and never feeds this optimizer.
    Registered with ``with_kwargs=True``, so ``conv(input=x)`` is captured like ``conv(x)``.

    Args:
        receive: ``receive(layer, x, output)``, a bound method: the optimizer's, which turns the
            activations into statistics (:func:`batch_statistics`) and adds them to its state.
        layer: what the receiver knows the layer by (passed back to it untouched).
    """

    def __init__(self, receive: Callable[[Any, torch.Tensor, torch.Tensor], None], layer: Any) -> None:
        self._receive = weakref.WeakMethod(receive)
        self._layer = weakref.ref(layer)

    @property
    def owner(self) -> Any:
        """The live object whose method receives this layer's activations, or ``None``."""
        receive, layer = self._receive(), self._layer()
        return None if receive is None or layer is None else receive.__self__

    @torch.compiler.disable  # under torch.compile(model): runs eagerly, between compiled graphs
    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        receive, layer = self._receive(), self._layer()
        if receive is None or layer is None:
            _unhook(module, self)  # the optimizer is gone
            return
        if not module.training:
            return
        x = args[0] if args else kwargs["input"]
        # Statistics are plain tensors even under inference_mode (later forwards add into them in
        # place), never part of an autograd graph, and at least float32.
        with (
            torch.inference_mode(False),
            torch.no_grad(),
            torch.autocast(output.device.type, enabled=False),
        ):
            receive(layer, x, output)

    def __deepcopy__(self, memo: dict) -> DroppedHook:
        return DroppedHook()

    def __reduce__(self) -> tuple:
        return (DroppedHook, ())


class DroppedHook:
    """What a :class:`CaptureHook` becomes in a copied or unpickled model: it removes itself.

    ``nn.Module`` copies its hook dictionaries with the module, so the entry cannot be left out of
    the copy; on its first call this placeholder deletes its own entry, and does nothing else.
    """

    def __call__(self, module: nn.Module, *args: Any) -> None:
        _unhook(module, self)


def hooked_by(module: nn.Module) -> Any:
    """The optimizer whose hook feeds on ``module``, or ``None``.

    An optimizer that was closed, or garbage collected, no longer holds the module.

    Args:
        module: a layer.

    Returns:
        the live :class:`~hebbopt.HebbianOptimizer` hooked to it, or ``None``.
    """
    for hook in module._forward_hooks.values():
        if isinstance(hook, CaptureHook) and hook.owner is not None:
            return hook.owner
    return None


def _unhook(module: nn.Module, hook: object) -> None:
    # nn.Module.__call__ iterates a snapshot of the hooks, so removing one while called is safe.
    for key, h in list(module._forward_hooks.items()):
        if h is hook:
            del module._forward_hooks[key]
            module._forward_hooks_with_kwargs.pop(key, None)
            module._forward_hooks_always_called.pop(key, None)
