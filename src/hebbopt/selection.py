"""Which layers a Hebbian optimizer hooks, and the checks that a layer can be hooked."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn

HEBBIAN_TYPES = (nn.Conv2d, nn.Linear)
"""The layer types the rules support (exactly these ``forward`` methods; Conv2d with groups=1)."""


def check_layer(name: str, module: object) -> None:
    """Raise a clear error unless ``module`` is a Conv2d (groups=1) or Linear the rules support.

    Args:
        name: the layer's name, for the error message.
        module: the candidate layer.

    Raises:
        TypeError: not an ``nn.Conv2d``/``nn.Linear``, or a subclass with its own ``forward``
            (its geometry is unknown, e.g. timm's ``Conv2dSame``).
        ValueError: ``groups > 1`` or an uninitialised lazy module.
    """
    if not isinstance(module, HEBBIAN_TYPES):
        raise TypeError(
            f"layer {name!r} is a {type(module).__name__}; Hebbian rules support nn.Conv2d and "
            "nn.Linear only. Pass those modules (or the whole model) instead."
        )
    base = nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear
    if type(module).forward is not base.forward:
        raise TypeError(
            f"layer {name!r} ({type(module).__name__}) overrides {base.__name__}.forward, so its "
            "patches are unknown to the rules; leave it out (pass the other layers explicitly)."
        )
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"layer {name!r} is a lazy module: run one forward pass before hooking it.")
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        raise ValueError(
            f"layer {name!r} has groups={module.groups}; Hebbian rules support groups=1 only. "
            "Leave grouped/depthwise convolutions out (pass the other layers explicitly)."
        )


def classifier(model: nn.Module) -> nn.Module | None:
    """The model's classifier: timm's ``get_classifier()``, else its last ``nn.Linear``.

    Args:
        model: the network.

    Returns:
        the classifier module, or ``None`` (no ``nn.Linear``, or ``get_classifier()`` returned
        something other than a module).
    """
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        return head if isinstance(head, nn.Module) else None
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def hebbian_layers(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, nn.Module]:
    """The hidden ``nn.Conv2d``/``nn.Linear`` layers of ``model``, by qualified name.

    By default the classifier is left out: the module timm's ``model.get_classifier()`` returns
    (with all its submodules), or for other models the last ``nn.Linear`` in module order. A
    model that is itself a Conv2d/Linear is returned as the single layer ``""``.

    Args:
        model: the network.
        include: ``fnmatch`` patterns of layer names to select instead of the default (these may
            name the classifier), e.g. ``["features.*"]``.
        exclude: patterns of layer names to leave out, e.g. ``["pre_logits.*"]``.

    Returns:
        ``{name: module}`` in module order; pass it to an optimizer as is.

    Examples:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2))
        >>> list(hebbian_layers(net))
        ['0', '3']
        >>> list(hebbian_layers(net, exclude=["3"]))
        ['0']

    Raises:
        TypeError: a selected layer is not a plain Conv2d/Linear (see :func:`check_layer`).
        ValueError: a pattern matches no Conv2d/Linear layer (the message lists them), nothing is
            selected, or a selected layer cannot be hooked (``groups > 1``, lazy).
    """
    if isinstance(model, HEBBIAN_TYPES):
        check_layer("", model)
        return {"": model}
    candidates = {name: m for name, m in model.named_modules() if isinstance(m, HEBBIAN_TYPES)}
    for pattern in [*(include or ()), *exclude]:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in candidates):
            raise ValueError(
                f"layer pattern {pattern!r} matches no nn.Conv2d/nn.Linear of {type(model).__name__}; "
                f"its layers are: {', '.join(candidates) or 'none'}"
            )
    if include is not None:
        layers = {n: m for n, m in candidates.items() if any(fnmatch.fnmatchcase(n, p) for p in include)}
    else:
        head = classifier(model)
        excluded = {id(m) for m in head.modules()} if head is not None else set()
        layers = {n: m for n, m in candidates.items() if id(m) not in excluded}
    layers = {n: m for n, m in layers.items() if not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d/nn.Linear layer besides its classifier "
            "(or all were excluded): nothing to train with a Hebbian rule."
        )
    for name, m in layers.items():
        check_layer(name, m)
    return layers
