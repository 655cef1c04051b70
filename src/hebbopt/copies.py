"""Copies and pickles of an optimizer that hooks a model's layers (the copy protocol of
:class:`~hebbopt.optimizer.HebbianOptimizer`).

``copy.deepcopy((model, optimizer))`` and a pickle of both give a copy that hooks the copied
model's layers. A deep copy of the optimizer alone is refused: it would hook copies of its layers
that no model uses. A shallow copy is refused: it would hook the same layers twice. Buffers kept
for speed (spare statistics, weight copies, checked hyper-parameters) are not copied.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from hebbopt.layers import HookedLayer


class HookedCopies:
    """The copy protocol of an optimizer with hooked layers (``_layers``: weight →
    :class:`~hebbopt.layers.HookedLayer`, ``_capture`` the hook, ``_closed``)."""

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}
        state["_layers"] = [
            (layer.name, layer.module, layer.param, layer.captured) for layer in self._layers.values()
        ]
        state["_spare"] = {}  # buffers for reuse only
        state["_before"] = {}
        state["_checked"] = {}
        state.pop("_group_index", None)  # rebuilt from the param groups
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        layers = state.pop("_layers", None)
        state.setdefault("statistics_dtype", None)  # pickled before the option
        super().__setstate__(state)
        if layers is None:  # torch's load_state_dict() sets only "state" and "param_groups"
            return
        self._checked = {}
        self._group_index = {p: i for i, group in enumerate(self.param_groups) for p in group["params"]}
        self._layers = {}
        for name, module, param, captured in layers:
            layer = self._layers[param] = HookedLayer(name, module, param)
            layer.captured = captured
            if not self._closed:
                layer.hook(self._capture)

    def __deepcopy__(self, memo: dict) -> HookedCopies:
        # The copy hooks the copies of its layers, so they must be copied in the same call, first.
        # Copied alone, it would hook layers of no model and silently train nothing.
        missing = [layer.name for layer in self._layers.values() if id(layer.module) not in memo]
        if missing:
            raise TypeError(
                f"copy.deepcopy of a {type(self).__name__} alone would hook copies of its layers that "
                f"no model uses (not copied before it: {missing}); copy the model with it, model "
                "first: copy.deepcopy((model, optimizer)), or build a new optimizer on the copied "
                "model and load_state_dict(optimizer.state_dict())"
            )
        copied = memo[id(self)] = type(self).__new__(type(self))
        copied.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return copied

    def __copy__(self) -> HookedCopies:
        raise TypeError(
            f"a shallow copy of a {type(self).__name__} would hook the same layers twice; use "
            "copy.deepcopy((model, optimizer)), or a new optimizer and load_state_dict()"
        )


def to_device(value: Any, device: torch.device) -> Any:
    """A saved state entry on ``device``, copied, dtype kept (dicts of tensors entry by entry).

    Args:
        value: a tensor, a dict of them, or anything else (returned as it is).
        device: where the copy goes.

    Returns:
        The copy.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device=device, copy=True)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value
