"""The recipes' model: ``model.name`` and ``model.kwargs`` checked, and built seeded."""

from __future__ import annotations

import inspect
from typing import Any

import timm
import torch
from torch import nn

import hebbopt  # noqa: F401  (registers the timm models)
from hebbopt.data import ImageSplits
from hebbopt.data.seeds import derive_seed  # the recipes' named random streams
from hebbopt.training.config import Config, ConfigError


def _model_error(cfg: Config, e: Exception) -> str:
    """The message for a model timm refused; unknown keyword arguments list the accepted ones."""
    if isinstance(e, TypeError) and "unexpected keyword argument" in str(e):
        return (
            f"model.kwargs {cfg.model.kwargs!r}: {e}; {cfg.model.name} accepts "
            f"{_accepted_model_kwargs(cfg.model.name)}"
        )
    return f"model.name {cfg.model.name!r}: {e}"


def _accepted_model_kwargs(name: str) -> list[str]:
    """The constructor parameters of timm model ``name``'s class, sorted ([] if it cannot be built)."""
    try:
        with torch.device("meta"):  # no memory, no initialisation cost
            model = timm.create_model(name)
    except Exception:
        return []
    params = inspect.signature(type(model).__init__).parameters.values()
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return sorted(p.name for p in params if p.name != "self" and p.kind not in skip)


def _refuse_nulls(cfg: Config) -> None:
    nulls = [k for k, v in cfg.model.kwargs.items() if v is None]
    if nulls:
        raise ConfigError(
            f"model.kwargs: {', '.join(map(repr, nulls))} has no value (null); write {{key: value}} with a "
            f"space after the colon, e.g. {{width: 0.5}}; {cfg.model.name} accepts "
            f"{_accepted_model_kwargs(cfg.model.name)}"
        )


def check_model_kwargs(cfg: Config) -> None:
    """Check ``model.name`` and ``model.kwargs`` before any folder is made or data read.

    Null values are refused (YAML reads ``{width:0.5}``, without a space, as the key
    ``width:0.5`` with a null value), and so are keyword arguments the model does not take: the
    model is built once on the ``meta`` device (no memory) with the defaults plus ``model.kwargs``.

    Args:
        cfg: the configuration (``model``).

    Raises:
        ConfigError: a null value, an unknown model, or a keyword argument the model does not take
            (the message lists the accepted ones).
    """
    _refuse_nulls(cfg)
    try:
        with torch.device("meta"):
            timm.create_model(cfg.model.name, **cfg.model.kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(_model_error(cfg, e)) from None
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ConfigError(_model_error(cfg, e)) from None
    except Exception:
        pass


def check_layer_patterns(cfg: Config) -> None:
    """Check ``pretrain.include`` and ``pretrain.exclude`` against the layers of the configured model.

    The model is built once on the ``meta`` device (no memory), as :func:`check_model_kwargs` does,
    and its layers are selected with :func:`~hebbopt.hebbian_layers`. Nothing is checked when
    neither key is set, or when the model cannot be built (:func:`check_model_kwargs` says why).

    Args:
        cfg: the configuration (``model``, ``pretrain.include``, ``pretrain.exclude``).

    Raises:
        ConfigError: a pattern matches no Conv2d/Linear layer of the model (the message lists its
            layers), a pattern list is a plain string, or the patterns leave nothing to train.
    """
    from hebbopt import hebbian_layers

    include, exclude = cfg.pretrain.include, cfg.pretrain.exclude
    if include is None and exclude is None:
        return
    try:
        with torch.device("meta"):
            model = timm.create_model(cfg.model.name, **cfg.model.kwargs)
    except Exception:
        return
    try:
        hebbian_layers(model, include=include, exclude=exclude or ())
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"pretrain.include {include!r} / pretrain.exclude {exclude!r}: {e} "
            f"(model.name {cfg.model.name!r})"
        ) from None


def build_model(
    cfg: Config, splits: ImageSplits, *, seed: int, drop_rate: float | None = None, head_norm: str = "none"
) -> nn.Module:
    """``timm.create_model(model.name)`` for the dataset's channels, classes and size, seeded.

    Args:
        cfg: the configuration (``model``).
        splits: the dataset; its channels, classes and (for ``hebb_alexnet_*``) image size are the
            defaults of ``in_chans``, ``num_classes`` and ``img_size``.
        seed: the run's seed: ``torch.manual_seed(derive_seed(seed, "init"))`` before the model
            is made draws its initial weights (:func:`~hebbopt.data.seeds.derive_seed`).
        drop_rate: timm's ``drop_rate`` (dropout); None keeps the model's default.
        head_norm: the model's ``head_norm`` (``finetune.head_norm``); ``none`` passes nothing, so
            models without the option build as before.

    Returns:
        The model on the CPU, in channels-last memory format if ``model.channels_last``.

    Raises:
        ConfigError: timm does not know ``model.name``, or the model refuses the arguments (null
            values and unknown keyword arguments are named, with the accepted ones).
    """
    _refuse_nulls(cfg)
    kwargs: dict[str, Any] = {
        "in_chans": splits.in_chans,
        "num_classes": splits.num_classes,
        **cfg.model.kwargs,
    }
    if cfg.model.name.startswith(("hebb_", "softhebb")):
        kwargs.setdefault("img_size", splits.img_size)
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if head_norm != "none":
        kwargs["head_norm"] = head_norm
    torch.manual_seed(derive_seed(seed, "init"))
    try:
        model = timm.create_model(cfg.model.name, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:  # timm: "Unknown model"; the model: bad arguments
        if "head_norm" in kwargs and "head_norm" in str(e) and "head_norm" not in cfg.model.kwargs:
            raise ConfigError(
                f"finetune.head_norm {head_norm!r}: model {cfg.model.name} has no head_norm option (the "
                "SoftHebb and hebb_alexnet networks have it); use none"
            ) from None
        raise ConfigError(_model_error(cfg, e)) from None
    return model.to(memory_format=torch.channels_last) if cfg.model.channels_last else model
