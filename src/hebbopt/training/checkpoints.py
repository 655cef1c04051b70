"""The files a run writes and reads: checksummed checkpoints, JSON records, input files by digest."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from hebbopt.files import CorruptFileError, atomic_write_bytes, sha256_file
from hebbopt.training.config import ConfigError

CHECKPOINT_FORMAT = "hebbopt-checkpoint-1"
"""The ``format`` entry of a checkpoint file (see :func:`save_checkpoint`)."""


def save_checkpoint(path: pathlib.Path, state: dict) -> None:
    """Atomically save ``state`` plus the CPU/CUDA random states, with a sha256 checksum.

    The file is a ``torch.save`` of ``{"format", "sha256", "payload"}``: ``payload`` holds the bytes
    of ``torch.save(state)`` (a uint8 tensor), ``sha256`` their checksum, so that
    :func:`load_checkpoint` can refuse a damaged file. Everything loads with ``weights_only=True``.

    Args:
        path: the checkpoint file.
        state: what to save (model and optimizer state dicts, epoch, history, ...); saved with an
            added ``rng`` entry.

    Raises:
        OSError: the file could not be written (a full disk says so and names it).
    """
    state = {**state, "rng": {"cpu": torch.get_rng_state()}}
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    inner = io.BytesIO()
    torch.save(state, inner)
    payload = inner.getbuffer()
    outer = io.BytesIO()
    torch.save(
        {"format": CHECKPOINT_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
         "payload": torch.frombuffer(payload, dtype=torch.uint8)},
        outer,
    )  # fmt: skip
    atomic_write_bytes(path, outer.getvalue())


def load_checkpoint(path: pathlib.Path) -> dict:
    """A checkpoint written by :func:`save_checkpoint`, checksum verified, random states restored.

    Only tensors and plain containers are unpickled (``weights_only=True``): a planted pickle
    cannot run code.

    Args:
        path: the checkpoint file.

    Returns:
        The saved state (with its ``rng`` entry), tensors on the CPU.

    Raises:
        CorruptFileError: the file is truncated, garbled, not a hebbopt checkpoint (e.g. a pickle
            of arbitrary objects) or fails its checksum; the message names it.
    """
    advice = "delete it to restart the run from its beginning, or restore it"
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CorruptFileError(
            f"{path}: not a loadable checkpoint ({type(e).__name__}: {first}); it is truncated, damaged or "
            f"holds objects other than tensors; {advice}"
        ) from None
    if not (
        isinstance(outer, dict)
        and outer.get("format") == CHECKPOINT_FORMAT
        and isinstance(outer.get("payload"), torch.Tensor)
        and isinstance(outer.get("sha256"), str)
    ):
        raise CorruptFileError(f"{path}: not a hebbopt checkpoint (no checksum); {advice}")
    payload = outer["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != outer["sha256"]:
        raise CorruptFileError(f"{path}: checksum mismatch, the checkpoint is damaged; {advice}")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        rng = state["rng"]
    except Exception as e:
        raise CorruptFileError(
            f"{path}: unreadable checkpoint content ({type(e).__name__}: {e}); {advice}"
        ) from None
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def write_json(path: pathlib.Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (see :func:`hebbopt.files.atomic_write`).

    Args:
        path: the file to write.
        obj: anything ``json.dumps`` takes.

    Raises:
        OSError: the file could not be written (a full disk says so and names it).
    """
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_json(path: pathlib.Path) -> Any:
    """A JSON file written by :func:`write_json`.

    Args:
        path: the file.

    Returns:
        The parsed content.

    Raises:
        CorruptFileError: the file is truncated or not JSON; the message names it.
    """
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: not valid JSON ({e}); it is damaged: delete or restore it") from None


def file_input(path: str | os.PathLike, what: str) -> dict:
    """A file a run reads (e.g. the backbone), as the run records it: absolute path and checksums.

    A weights file written by :func:`~hebbopt.weights.save_weights` also records the digest of its
    tensors (``weights``, from its metadata, verified when it is loaded): that, not its bytes, is
    its identity (see :func:`same_input`), so the same weights written again, by another process or
    another version, are the same input.

    Args:
        path: the file.
        what: its role, for the message (e.g. ``"--backbone"``).

    Returns:
        ``{"path": absolute path, "sha256": digest of its bytes}``, with ``"weights"`` (the
        digest of its tensors) for a weights file that records it.

    Raises:
        ConfigError: there is no such file.
    """
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    record = {"path": str(file.resolve()), "sha256": sha256_file(file)}
    if file.suffix == ".safetensors":
        try:
            with safe_open(str(file), framework="pt") as f:
                digest = (f.metadata() or {}).get("sha256")
        except (SafetensorError, OSError, RuntimeError, ValueError):
            digest = None  # damaged: loading it names the file
        if digest:
            record["weights"] = digest
    return record


def same_input(before: dict | None, now: dict | None) -> bool:
    """Whether two records of :func:`file_input` (or None: no file) are the same input.

    Args:
        before: the record a run started with.
        now: the record of the file it is given now.

    Returns:
        True when both are None, or both record the same tensors (``weights``), or, for other files
        (or records without ``weights``), the same bytes (``sha256``).
    """
    if before is None or now is None:
        return before is None and now is None
    if "weights" in before and "weights" in now:
        return before["weights"] == now["weights"]
    return before.get("sha256") == now.get("sha256")
