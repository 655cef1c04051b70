"""Pre-trained backbones on disk as safetensors, loadable back by timm.

``save_weights(model, path)`` writes the model's whole ``state_dict`` (classifier included, so a
checkpoint is complete) atomically. timm loads it for fine-tuning with a new head:

    timm.create_model("hebb_alexnet_6l", pretrained=True, num_classes=100,
                      pretrained_cfg_overlay=dict(file="hpca.safetensors"))

(timm drops the saved classifier when ``num_classes`` differs). :func:`load_weights` loads into
an existing model and explains any mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from hebbopt.files import CorruptFileError, atomic_write_bytes


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """The sha256 of a state dict: every key, dtype, shape and the tensors' bytes, keys sorted.

    :func:`save_weights` records it in the file's metadata (``sha256``); :func:`read_weights`
    checks it.

    Args:
        state: tensors by name.

    Returns:
        The hexadecimal digest.

    Examples:
        >>> a = {"w": torch.ones(2)}
        >>> weights_digest(a) == weights_digest({"w": torch.ones(2)}) != weights_digest({"w": torch.zeros(2)})
        True
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` (a safetensors file) with its ``__metadata__`` entries in key order.

    safetensors writes them from a Rust ``HashMap``, whose order changes from one call to the next,
    so the same tensors gave files that differ in bytes (and so in checksum) from run to run. The
    header is rewritten with its other entries in place; the tensors' offsets are relative to the
    end of the header, so the data is untouched."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if isinstance(header.get("__metadata__"), dict):
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the header is padded to 8 bytes, as safetensors pads it
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def save_weights(model: nn.Module, path: str | os.PathLike) -> pathlib.Path:
    """Write ``model.state_dict()`` to ``path`` (``.safetensors``), atomically.

    The file appears complete or not at all: written to a temporary file beside it, then renamed.
    Missing parent folders are created. The same tensors always give the same bytes (the
    metadata's entries are in key order), so two runs of one configuration and seed write
    identical files.

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
    data = save(state, metadata={"format": "pt", "sha256": weights_digest(state)})
    atomic_write_bytes(path, _sorted_metadata(data))
    return path


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked against the sha256 in its metadata.

    Files without a ``sha256`` entry (not written by :func:`save_weights`) are read unchecked.

    Args:
        path: the file.

    Returns:
        The tensors by name, on the CPU.

    Raises:
        FileNotFoundError: there is no such file.
        CorruptFileError: the file is truncated or garbled, or its tensors fail the checksum.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as e:
        raise CorruptFileError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); it is truncated or "
            "damaged: write it again (re-run the pre-training) or restore it"
        ) from None
    expected = metadata.get("sha256")
    if expected is not None and weights_digest(state) != expected:
        raise CorruptFileError(
            f"{path}: checksum mismatch (sha256 of its tensors differs from the one recorded when it was "
            "written): the file is damaged; write it again (re-run the pre-training) or restore it"
        )
    return state


def load_weights(model: nn.Module, path: str | os.PathLike, *, skip: tuple[str, ...] = ()) -> None:
    """Load a safetensors state dict into ``model``; nothing is loaded if any key mismatches.

    Args:
        model: the network to load into.
        path: a file written by :func:`save_weights` (or any safetensors state dict).
        skip: key prefixes to leave out on both sides (e.g. ``("classifier.",)`` for a new head).

    Raises:
        ValueError: missing, unexpected or differently shaped keys, all named.
        FileNotFoundError: there is no such file.
        CorruptFileError: the file is damaged (see :func:`read_weights`).

    Examples:
        >>> import tempfile, pathlib, torch.nn as nn
        >>> a, b = nn.Linear(4, 2), nn.Linear(4, 2)
        >>> path = save_weights(a, pathlib.Path(tempfile.mkdtemp()) / "a.safetensors")
        >>> load_weights(b, path)
        >>> bool((a.weight == b.weight).all())
        True
    """
    state = {k: v for k, v in read_weights(path).items() if not k.startswith(skip)}
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
