"""Pre-trained backbones on disk as safetensors, loadable back by timm.

``save_weights(model, path)`` writes the model's whole ``state_dict`` (classifier included, so a
checkpoint is complete) atomically. timm loads it for fine-tuning with a new head:

    timm.create_model("hebb_alexnet_6l", pretrained=True, num_classes=100,
                      pretrained_cfg_overlay=dict(file="hpca.safetensors"))

(timm drops the saved classifier when ``num_classes`` differs). :func:`load_weights` loads into
an existing model and explains any mismatch.
"""

from __future__ import annotations

import os
import pathlib

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hebbopt.files import atomic_write


def save_weights(model: nn.Module, path: str | os.PathLike) -> pathlib.Path:
    """Write ``model.state_dict()`` to ``path`` (``.safetensors``), atomically.

    The file appears complete or not at all: written to a temporary file beside it, then renamed.
    Missing parent folders are created.

    Args:
        model: the network (its whole ``state_dict``, classifier and buffers included).
        path: the file to write; must end in ``.safetensors``.

    Returns:
        the path written.

    Raises:
        ValueError: ``path`` does not end in ``.safetensors`` (timm picks the loader by suffix).
    """
    path = pathlib.Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: use a .safetensors file name (timm loads safetensors by suffix)")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    return path


def load_weights(model: nn.Module, path: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> None:
    """Load a safetensors state dict into ``model``; nothing is loaded if any key mismatches.

    Args:
        model: the network to load into.
        path: a file written by :func:`save_weights` (or any safetensors state dict).
        skip: key prefixes to leave out on both sides (e.g. ``("classifier.",)`` for a new head).

    Raises:
        ValueError: missing, unexpected or differently shaped keys, all named.

    Examples:
        >>> import tempfile, pathlib, torch.nn as nn
        >>> a, b = nn.Linear(4, 2), nn.Linear(4, 2)
        >>> path = save_weights(a, pathlib.Path(tempfile.mkdtemp()) / "a.safetensors")
        >>> load_weights(b, path)
        >>> bool((a.weight == b.weight).all())
        True
    """
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith(skip)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & state.keys()
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path} does not fit {type(model).__name__}: missing keys {missing}, unexpected keys "
            f"{unexpected}, shape mismatches {shapes}. Is it a checkpoint of another architecture?"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=not skip)
