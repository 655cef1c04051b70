"""The layers of an optimizer's param groups: what a group's ``"modules"`` names, the hook of each
layer, and the report that :meth:`~hebbopt.HebbianOptimizer.describe` prints."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hebbopt import capture
from hebbopt.selection import HEBBIAN_TYPES, check_layer, find_classifier, hebbian_layers, unsupported_layers


class HookedLayer:
    """One layer of an optimizer: its name, module, registered weight and forward hook.

    Args:
        name: the layer's name in the optimizer (``describe()``, ``last_update``).
        module: the ``nn.Conv2d`` or ``nn.Linear``.
        param: its weight when hooked (the key of the optimizer's state).
    """

    def __init__(self, name: str, module: nn.Module, param: nn.Parameter) -> None:
        self.name, self.module, self.param = name, module, param
        self.captured = False
        """Whether a forward pass has ever been captured (for the warning on layers that never ran)."""
        self.handle: Any = None

    def hook(self, receive: Callable[[HookedLayer, torch.Tensor, torch.Tensor], None]) -> None:
        """Register the forward hook that hands this layer's activations to ``receive``.

        Args:
            receive: ``receive(layer, x, output)``, a bound method (held weakly by the hook).
        """
        hook = capture.CaptureHook(receive, self)
        self.handle = self.module.register_forward_hook(hook, with_kwargs=True)

    def unhook(self) -> None:
        """Remove the forward hook (if any)."""
        if self.handle is not None:
            self.handle.remove()


def as_groups(params: Any) -> list[dict[str, Any]]:
    """The param groups of an optimizer's ``params`` argument.

    Args:
        params: a model, a layer, a ``{name: module}`` dict, an iterable of modules, or param-group
            dicts ``{"modules": ..., ...}``.

    Returns:
        a list of param-group dicts, each with a ``"modules"`` key.

    Raises:
        TypeError: tensors or parameters instead of modules, or something not iterable.
        ValueError: an empty iterable.
    """
    if isinstance(params, (nn.Module, Mapping)):
        return [{"modules": params}]
    if isinstance(params, torch.Tensor):
        raise TypeError("Hebbian optimizers take a model or its layers, not tensors")
    if not isinstance(params, Iterable):
        raise TypeError(f"expected a model, modules or param-group dicts, got {type(params).__name__}")
    items = list(params)
    if not items:
        raise ValueError("no modules given: pass a model, Conv2d/Linear modules or param groups")
    if all(isinstance(g, dict) for g in items):
        return items
    if any(isinstance(g, torch.Tensor) for g in items):
        raise TypeError(
            "Hebbian optimizers take the model or its modules, not parameters: "
            "use HPCAHebb(model), not HPCAHebb(model.parameters())"
        )
    return [{"modules": items}]


def named_layers(modules: Any, start: int) -> tuple[dict[str, nn.Module], dict[str, str], str | None]:
    """The layers a param group's ``"modules"`` names, those it skips, and its classifier line.

    Args:
        modules: a model (its hidden layers, see :func:`~hebbopt.selection.hebbian_layers`), a
            ``{name: module}`` dict, or an iterable of layers (named ``layer<i>``).
        start: the index of the first unnamed layer (the optimizer's count so far).

    Returns:
        ``({name: layer} to hook, {name: reason} skipped, the report's line on the classifier or
        ``None``)``; the line has a ``{prefix}`` placeholder for the layer's name.

    Raises:
        TypeError: not a model or an iterable of modules, or a layer the rules cannot hook.
        ValueError: no modules, or one module twice.
    """
    if isinstance(modules, nn.Module):
        if isinstance(modules, HEBBIAN_TYPES):
            return hebbian_layers(modules), {}, None
        return hebbian_layers(modules), unsupported_layers(modules), classifier_line(modules)
    if isinstance(modules, Mapping):  # {name: module}, e.g. from hebbian_layers(model, exclude=...)
        for name, m in modules.items():
            check_layer(name, m)
        if not modules:
            raise ValueError("a param group has no modules")
        return dict(modules), {}, None
    if isinstance(modules, torch.Tensor) or not isinstance(modules, Iterable):
        raise TypeError(f"'modules' must be a model or an iterable of modules, got {type(modules).__name__}")
    named = {}
    for i, m in enumerate(modules):
        name = f"layer{start + i}"
        check_layer(name, m)
        named[name] = m
    if not named:
        raise ValueError("a param group has no modules")
    if len({id(m) for m in named.values()}) != len(named):
        raise ValueError("the same module appears twice in a param group")
    return named, {}, None


def classifier_line(model: nn.Module) -> str:
    """The report's line on a model's classifier: which, how it was found, or why there is none.

    Args:
        model: the model given to the optimizer.

    Returns:
        e.g. ``"classifier: {prefix}fc (get_classifier() of ResNet), not hooked"``.
    """
    head, how = find_classifier(model)
    if head is None:
        return f"{how}; every supported layer is hooked (exclude the head by name if there is one)"
    name = next((n or "(the model)" for n, m in model.named_modules() if m is head), type(head).__name__)
    return f"classifier: {{prefix}}{name} ({how}), not hooked"


def report(groups: Sequence[Sequence[HookedLayer]], heads: Sequence[str], skipped: Mapping[str, str]) -> str:
    """A table of the hooked layers (name, type, weight shape, group), then why the rest are not.

    Args:
        groups: the hooked layers of each param group, in order.
        heads: the classifier line of each model given (:func:`classifier_line`).
        skipped: ``{name: reason}`` of the layers left out.

    Returns:
        the table as text, one layer per line after a header, then the other lines.
    """
    rows = [("layer", "type", "weight", "group")]
    for gi, layers in enumerate(groups):
        for layer in layers:
            shape = "×".join(map(str, layer.param.shape))
            rows.append((layer.name, type(layer.module).__name__, shape, str(gi)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines += heads
    lines += [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)
