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


def unsupported_layers(model: nn.Module) -> dict[str, str]:
    """Layers of ``model`` with weights that a Hebbian optimizer leaves out, and why.

    A whole model passed to an optimizer gets its supported layers hooked and these skipped
    (``optimizer.describe()`` lists them); passed explicitly, they are refused.

    Args:
        model: the network.

    Returns:
        ``{name: reason}`` in module order: other convolution types (Conv1d, Conv3d, transposed),
        grouped convolutions, subclasses with their own ``forward``, lazy modules, and the output
        projection of ``nn.MultiheadAttention`` (called through ``F.linear``, its hooks never run).

    Examples:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=2), nn.Linear(4, 2))
        >>> unsupported_layers(net)
        {'0': 'Conv1d is not a supported type (nn.Conv2d, nn.Linear)', '1': 'groups=2 (only groups=1)'}
    """
    attention = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    skipped = {}
    for name, m in model.named_modules():
        if id(m) in attention:
            skipped[name] = "nn.MultiheadAttention calls it through F.linear: its forward never runs"
        elif isinstance(m, HEBBIAN_TYPES):
            try:
                check_layer(name, m)
            except (TypeError, ValueError) as e:
                skipped[name] = _reason(m, e)
        elif isinstance(m, nn.modules.conv._ConvNd):
            skipped[name] = f"{type(m).__name__} is not a supported type (nn.Conv2d, nn.Linear)"
    return skipped


def _reason(m: nn.Module, error: Exception) -> str:
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return f"groups={m.groups} (only groups=1)"
    if isinstance(m.weight, nn.parameter.UninitializedParameter):
        return "lazy module not yet initialised"
    return f"{type(m).__name__} overrides forward"


def classifier(model: nn.Module) -> nn.Module | None:
    """The model's classifier (its head), found as :func:`find_classifier` says.

    Args:
        model: the network.

    Returns:
        the classifier module, or ``None`` (no head found).
    """
    return find_classifier(model)[0]


def find_classifier(model: nn.Module) -> tuple[nn.Module | None, str]:
    """The model's head and how it was found; only a head, never a Linear inside a block.

    In this order: timm's ``model.get_classifier()``; the module named by
    ``model.pretrained_cfg["classifier"]``; else the model's last child that has parameters if it
    is an ``nn.Linear``, or, if that child is an ``nn.Sequential``, its own last such child, and so
    on (``fc`` of a ResNet, the last Linear of VGG's ``classifier``, the last Linear of an
    ``nn.Sequential``). A Linear inside any other module (a ``TransformerEncoderLayer``'s
    ``linear2``, a custom block's last layer) is not a head: such a model has no classifier, and
    every Conv2d/Linear of it is Hebbian unless excluded by name.

    Args:
        model: the network.

    Returns:
        ``(module or None, how it was found)``, e.g. ``(model.fc, "the last Linear child of ResNet")``.

    Examples:
        >>> import torch.nn as nn
        >>> find_classifier(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)))[1]
        'the last layer with parameters of Sequential'
        >>> find_classifier(nn.Sequential(nn.Linear(8, 16), nn.TransformerEncoderLayer(16, 2)))
        (None, 'no classifier: the last layer with parameters of Sequential is a TransformerEncoderLayer')
    """
    kind = type(model).__name__
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        if isinstance(head, nn.Module):
            return head, f"get_classifier() of {kind}"
        return None, f"no classifier: get_classifier() of {kind} returned {type(head).__name__}"
    cfg = getattr(model, "pretrained_cfg", None)
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(name, str):
        try:
            return model.get_submodule(name), f"pretrained_cfg['classifier'] of {kind}"
        except AttributeError:
            pass
    last = model
    while isinstance(last, nn.Sequential) or last is model:
        children = [m for m in last.children() if any(True for _ in m.parameters())]
        if not children:
            return None, f"no classifier: {kind} has no layer with parameters"
        last = children[-1]
        if isinstance(last, nn.Linear):
            return last, f"the last layer with parameters of {kind}"
    return None, f"no classifier: the last layer with parameters of {kind} is a {type(last).__name__}"


def hebbian_layers(
    model: nn.Module, include: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> dict[str, nn.Module]:
    """The hidden ``nn.Conv2d``/``nn.Linear`` layers of ``model``, by qualified name.

    By default the classifier (the model's head, see :func:`find_classifier`) is left out with all
    its submodules: what timm's ``model.get_classifier()`` returns, or for other models a trailing
    ``nn.Linear`` (the last child with parameters, also through trailing ``nn.Sequential``
    containers); a Linear inside a block (e.g. a ``TransformerEncoderLayer``) is never taken for
    the head. A model that is itself a Conv2d/Linear is returned as the single layer ``""``.

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

    Layers the rules cannot hook (:func:`unsupported_layers`) are left out of the default
    selection; named by ``include``, they raise.

    Raises:
        TypeError: ``include``/``exclude`` is a string rather than a list of patterns, or a layer
            named by ``include`` is not a plain Conv2d/Linear (see :func:`check_layer`).
        ValueError: a pattern matches no Conv2d/Linear layer (the message lists them), nothing is
            selected, or a layer named by ``include`` cannot be hooked (``groups > 1``, lazy).
    """
    for arg, value in (("include", include), ("exclude", exclude)):
        if isinstance(value, str):
            raise TypeError(f"{arg} takes a list of patterns, got the string {value!r}: use [{value!r}]")
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
        skipped = unsupported_layers(model)
        layers = {n: m for n, m in candidates.items() if id(m) not in excluded and n not in skipped}
    layers = {n: m for n, m in layers.items() if not any(fnmatch.fnmatchcase(n, p) for p in exclude)}
    if not layers:
        skipped = "".join(f"; skipped {n}: {r}" for n, r in unsupported_layers(model).items())
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d/nn.Linear layer besides its classifier "
            f"(or all were excluded): nothing to train with a Hebbian rule{skipped}."
        )
    for name, m in layers.items():
        check_layer(name, m)
    return layers
