"""What every recipe shares: the accelerator, the model, batches, evaluation, run folders, checkpoints."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import math
import os
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import timm
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

import hebbopt  # noqa: F401  (registers the timm models)
from hebbopt.data import ImageSplits, TensorImages, load_dataset
from hebbopt.data.seeds import derive_seed  # the recipes' named random streams
from hebbopt.files import CorruptFileError, atomic_write_bytes, remove_leftovers, sha256_file
from hebbopt.training.config import Config, ConfigError, dump
from hebbopt.training.tracking import accelerator_kwargs


def make_accelerator(cfg: Config) -> Accelerator:
    """The :class:`accelerate.Accelerator` of a run; sets torch's CPU threads when ``run.threads``.

    Args:
        cfg: the configuration; ``run.cpu`` and ``run.mixed_precision`` are passed on, and
            ``run.log_with`` opens trackers (:func:`~hebbopt.training.tracking.accelerator_kwargs`).

    Returns:
        A new accelerator (the processes and devices come from ``accelerate launch``, if used).

    Raises:
        ConfigError: ``run.log_with`` names a tracker whose package is not installed.
    """
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    try:
        trackers = accelerator_kwargs(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Accelerator(cpu=cfg.run.cpu, mixed_precision=cfg.run.mixed_precision, **trackers)


def load_splits(cfg: Config, accelerator: Accelerator) -> ImageSplits:
    """The configured dataset (``cfg.data``).

    The main process loads first, decoding and caching the images; the other processes then read
    the cache.

    Args:
        cfg: the configuration.
        accelerator: the run's accelerator.

    Returns:
        The splits, as :func:`~hebbopt.data.datasets.load_dataset` returns them.

    Raises:
        ConfigError: the data cannot be used as configured (e.g. train and test classes differ, an
            empty class folder), named.
        CorruptFileError: a cache file is damaged.
    """
    kwargs = dict(
        img_size=cfg.data.img_size,
        in_memory=cfg.data.in_memory,
        download=cfg.data.download,
        cache=cfg.data.cache,
        synthetic_size=cfg.data.synthetic_size,
    )
    with accelerator.main_process_first():
        try:
            return load_dataset(cfg.data.name, cfg.data.root, verbose=accelerator.is_main_process, **kwargs)
        except CorruptFileError:
            raise
        except ValueError as e:  # missing or mismatched class folders, images of different sizes
            raise ConfigError(f"data: {e}") from None


def _model_error(cfg: Config, e: Exception) -> str:
    """The message for a model timm refused; unknown keyword arguments list the accepted ones."""
    if isinstance(e, TypeError) and "unexpected keyword argument" in str(e):
        return (
            f"model.kwargs {cfg.model.kwargs!r}: {e}; {cfg.model.name} accepts "
            f"{accepted_model_kwargs(cfg.model.name)}"
        )
    return f"model.name {cfg.model.name!r}: {e}"


def accepted_model_kwargs(name: str) -> list[str]:
    """The keyword arguments the class of timm model ``name`` takes (what ``model.kwargs`` may set).

    Args:
        name: a timm model name.

    Returns:
        The parameter names of the model class's constructor, sorted (empty if the model cannot
        be built with its defaults).
    """
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
            f"{accepted_model_kwargs(cfg.model.name)}"
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


def build_model(cfg: Config, splits: ImageSplits, *, seed: int, drop_rate: float | None = None) -> nn.Module:
    """``timm.create_model(model.name)`` for the dataset's channels, classes and size, seeded.

    Args:
        cfg: the configuration (``model``).
        splits: the dataset; its channels, classes and (for ``hebb_alexnet_*``) image size are the
            defaults of ``in_chans``, ``num_classes`` and ``img_size``.
        seed: the run's seed: ``torch.manual_seed(derive_seed(seed, "init"))`` before the model
            is made draws its initial weights (:func:`~hebbopt.data.seeds.derive_seed`).
        drop_rate: timm's ``drop_rate`` (dropout); None keeps the model's default.

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
    if cfg.model.name.startswith(("hebb_alexnet", "softhebb")):
        kwargs.setdefault("img_size", splits.img_size)
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    torch.manual_seed(derive_seed(seed, "init"))
    try:
        model = timm.create_model(cfg.model.name, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:  # timm: "Unknown model"; the model: bad arguments
        raise ConfigError(_model_error(cfg, e)) from None
    return model.to(memory_format=torch.channels_last) if cfg.model.channels_last else model


def shard(indices: torch.Tensor, accelerator: Accelerator, *, even: bool) -> torch.Tensor:
    """This process's share of ``indices``: every ``num_processes``-th, from ``process_index`` on.

    Args:
        indices: the indices of all processes, in order.
        accelerator: gives ``num_processes`` and ``process_index``.
        even: first drop the last ``len(indices) % num_processes`` indices, so that every process
            gets as many (needed when every batch ends in a collective, as Hebbian steps do).

    Returns:
        The indices of this process.

    Examples:
        >>> from types import SimpleNamespace
        >>> second_of_two = SimpleNamespace(num_processes=2, process_index=1)
        >>> shard(torch.arange(7), second_of_two, even=True).tolist()
        [1, 3, 5]
    """
    world = accelerator.num_processes
    if even:
        indices = indices[: len(indices) // world * world]
    return indices[accelerator.process_index :: world]


class Batches:
    """Batches of ``dataset[indices]`` on the accelerator's device, in a seeded order.

    Tensor datasets are gathered a batch at a time (no per-image Python work); streamed folders
    go through a :class:`~torch.utils.data.DataLoader` with ``workers`` and pinned memory. A
    final batch of one image is dropped (BatchNorm cannot train on it).

    Args:
        dataset: a :class:`~hebbopt.data.datasets.TensorImages`, or any dataset of ``(x, y)`` items.
        indices: the items to go through (of all processes).
        batch_size: images per batch, per process.
        accelerator: the device, and this process's share (see :func:`shard`).
        order_seed: shuffle ``indices`` with this seed first; None keeps their order.
        even: every process gets as many indices (see :func:`shard`).
        channels_last: images in channels-last memory format.
        workers: DataLoader worker processes (streamed datasets only).
        min_batch: a smaller final batch is dropped.
    """

    def __init__(
        self,
        dataset,
        indices: torch.Tensor,
        batch_size: int,
        accelerator: Accelerator,
        *,
        order_seed: int | None = None,
        even: bool = True,
        channels_last: bool = True,
        workers: int = 0,
        min_batch: int = 2,
    ) -> None:
        if order_seed is not None:
            indices = indices[
                torch.randperm(len(indices), generator=torch.Generator().manual_seed(order_seed))
            ]
        self.indices = shard(indices, accelerator, even=even)
        self.dataset, self.batch_size, self.accelerator = dataset, batch_size, accelerator
        self.channels_last, self.workers = channels_last, workers
        n = len(self.indices)
        full, rest = divmod(n, batch_size)
        self.length = full + (1 if rest >= min_batch else 0)

    def __len__(self) -> int:
        return self.length

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        x = x.to(device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.dataset, TensorImages):
            for i in range(self.length):
                yield self._to_device(
                    *self.dataset.batch(self.indices[i * self.batch_size : (i + 1) * self.batch_size])
                )
            return
        loader = DataLoader(
            Subset(self.dataset, self.indices.tolist()),
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=False,
        )
        for i, (x, y) in enumerate(loader):
            if i >= self.length:
                break
            yield self._to_device(x, y)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, indices: torch.Tensor | None, accelerator: Accelerator, cfg: Config
) -> dict:
    """Top-1 and top-5 accuracy (%) of ``model`` on ``dataset[indices]``, counted over all processes.

    The model is in eval mode meanwhile (then back to its mode), batches of 256 per process, under
    the accelerator's autocast.

    Args:
        model: the classifier.
        dataset: the images, as :class:`Batches` takes them.
        indices: the images to count; None: all of ``dataset``.
        accelerator: the device and processes; every process must call this.
        cfg: the configuration (``model.channels_last``, ``data.workers``).

    Returns:
        ``{"top1": %, "top5": %, "images": n}`` over all processes (top-5 is over the classes
        there are when fewer than 5).
    """
    if indices is None:
        indices = torch.arange(len(dataset))
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    batches = Batches(
        dataset, indices, 256, accelerator, even=False, channels_last=cfg.model.channels_last,
        workers=cfg.data.workers, min_batch=1,
    )  # fmt: skip
    for x, y in batches:
        with accelerator.autocast():
            logits = model(x)
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        counts += torch.stack(
            [hits[:, 0].sum(), hits.any(1).sum(), torch.tensor(len(y), device=y.device)]
        ).double()
    counts = accelerator.reduce(counts, reduction="sum")
    model.train(was_training)
    n = max(1.0, counts[2].item())
    return {
        "top1": 100 * counts[0].item() / n,
        "top5": 100 * counts[1].item() / n,
        "images": int(counts[2].item()),
    }


def step_lr(cfg_constant: int, halve_every: int):
    """The paper's learning-rate schedule, as a ``LambdaLR`` factor of the epoch.

    Constant for c = ``cfg_constant`` epochs, then halved every h = ``halve_every`` epochs:

        f(e) = 1 for e < c,    f(e) = 0.5^(⌊(e − c) / h⌋ + 1) for e ≥ c

    Args:
        cfg_constant: c, the epochs at the full learning rate (``finetune.lr_constant_epochs``).
        halve_every: h, the epochs between halvings (``finetune.lr_halve_every``).

    Returns:
        f, taking the epoch e (from 0) and giving the factor of the learning rate.

    Examples:
        >>> f = step_lr(10, 2)
        >>> [f(e) for e in (0, 9, 10, 11, 12, 14)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    """

    def factor(epoch: int) -> float:
        return 1.0 if epoch < cfg_constant else 0.5 ** ((epoch - cfg_constant) // halve_every + 1)

    return factor


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
    """A file a run reads (e.g. the backbone), as the run records it: absolute path and sha256.

    Args:
        path: the file.
        what: its role, for the message (e.g. ``"--backbone"``).

    Returns:
        ``{"path": absolute path, "sha256": digest of its bytes}``.

    Raises:
        ConfigError: there is no such file.
    """
    file = pathlib.Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    return {"path": str(file.resolve()), "sha256": sha256_file(file)}


RUN_KINDS = ("pretrain", "finetune", "semisup")
"""What a run folder holds (``run.json``'s ``kind``): a pre-training (Hebbian or VAE), a
fine-tuning, or a sweep."""


class Run:
    """A run folder: ``config.yaml`` (resolved), ``run.json`` (kind and input files with their
    sha256), ``log.txt``, ``metrics.json``, ``checkpoint.pt``.

    A folder that already holds a run is refused unless ``resume``; resuming checks that the
    configuration is the one the run started with (``run.progress``, ``run.threads``,
    ``run.log_with`` and ``run.log_every`` may differ,
    and ``run.dir`` is the folder itself, however it is spelled), that the folder holds a run of
    the same kind, with the same input files (by checksum), and refuses a folder with run files
    but no ``config.yaml``. Files are written by the main process only.

    Args:
        cfg: the configuration; ``run.dir`` is the folder.
        accelerator: the run's accelerator (which process is the main one, and barriers).
        resume: accept a folder that already holds a run of this configuration.
        kind: what the run is, one of :data:`RUN_KINDS`.
        inputs: the files the run reads, ``{role: None or file_input(...)}`` (see :func:`file_input`).

    Attributes:
        dir: the run folder.
        checkpoint: ``checkpoint.pt`` in it.
        main: whether this is the main process (the one that writes files).

    Raises:
        ConfigError: the folder holds a run and ``resume`` is false, or it holds a run of another
            configuration, kind or input file, or run files without ``config.yaml``.
        CorruptFileError: ``config.yaml`` or ``run.json`` is damaged.
    """

    def __init__(
        self, cfg: Config, accelerator: Accelerator, *, resume: bool, kind: str = "pretrain",
        inputs: dict | None = None,
    ) -> None:  # fmt: skip
        self.cfg, self.accelerator = cfg, accelerator
        self.kind, self.inputs = kind, dict(inputs or {})
        self.dir = pathlib.Path(os.path.normpath(pathlib.Path(cfg.run.dir).expanduser()))
        self.checkpoint = self.dir / "checkpoint.pt"
        config_file = self.dir / "config.yaml"
        if config_file.exists():
            if not resume:
                raise ConfigError(
                    f"{self.dir} already holds a run: pass --resume to continue it, or pick another run.dir"
                )
            _check_same(config_file, cfg)
            self._check_identity()
        elif resume and any(
            (self.dir / n).exists() for n in ("checkpoint.pt", "metrics.json", "results.json")
        ):
            raise ConfigError(
                f"{self.dir}: config.yaml is missing, so the configuration this run started with is unknown: "
                "cannot resume it; restore config.yaml, or start a new run in another run.dir"
            )
        self.main = accelerator.is_main_process
        self._started = False

    def _check_identity(self) -> None:
        file = self.dir / "run.json"
        if not file.exists():  # a folder written before run.json existed
            return
        saved = read_json(file)
        if not isinstance(saved, dict):
            raise CorruptFileError(f"{file}: not a run record; delete or restore it")
        if saved.get("kind") != self.kind:
            raise ConfigError(
                f"{self.dir} holds a {saved.get('kind')} run, not a {self.kind} run: cannot resume it with "
                "this script; use the script that made it, or another run.dir"
            )
        before, now = saved.get("inputs") or {}, self.inputs
        changed = [
            f"{role}: {(before.get(role) or {}).get('path')} -> {(now.get(role) or {}).get('path')}"
            for role in sorted(set(before) | set(now))
            if (before.get(role) or {}).get("sha256") != (now.get(role) or {}).get("sha256")
        ]
        if changed:
            raise ConfigError(f"{self.dir}: cannot resume with different input files: {'; '.join(changed)}")

    def start(self) -> None:
        """Create the folder and record the resolved configuration (call once the data and model
        are known to load, so a configuration that fails leaves no folder behind)."""
        if self.main and not self._started:
            self.dir.mkdir(parents=True, exist_ok=True)
            remove_leftovers(self.dir)  # *.tmp files of atomic writes that were killed
            atomic_write_bytes(self.dir / "config.yaml", dump(self.cfg).encode())
            write_json(self.dir / "run.json", {"kind": self.kind, "inputs": self.inputs})
        self._started = True
        self.accelerator.wait_for_everyone()

    def log(self, message: str, *, echo: bool = True) -> None:
        """Print (if ``echo``) on the main process and append to ``log.txt``, time-stamped.

        Args:
            message: the line to log.
            echo: also print it (above any progress bar).
        """
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            if echo:
                tqdm.write(message)
            with open(self.dir / "log.txt", "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def progress(self, iterable, desc: str):
        """A progress bar on the main process when ``run.progress``.

        Args:
            iterable: what to go through.
            desc: the bar's label.

        Returns:
            A ``tqdm`` over ``iterable`` (disabled on the other processes, or without ``run.progress``).
        """
        return tqdm(iterable, desc=desc, leave=False, disable=not (self.main and self.cfg.run.progress))

    def save(self, state: dict) -> None:
        """Write ``checkpoint.pt`` (:func:`save_checkpoint`) on the main process; every process waits.

        Args:
            state: what to save.
        """
        if self.main:
            save_checkpoint(self.checkpoint, state)
        self.accelerator.wait_for_everyone()

    def metrics(self, obj: dict) -> None:
        """Write ``metrics.json`` on the main process; every process waits.

        Args:
            obj: the metrics; ``"done": True`` marks a finished run (see :meth:`done`).
        """
        if self.main:
            write_json(self.dir / "metrics.json", obj)
        self.accelerator.wait_for_everyone()

    def done(self) -> dict | None:
        """The final metrics of a finished run in this folder.

        Returns:
            ``metrics.json`` if it says ``"done"``, else None.

        Raises:
            CorruptFileError: ``metrics.json`` is damaged.
        """
        file = self.dir / "metrics.json"
        if file.exists():
            metrics = read_json(file)
            if not isinstance(metrics, dict):
                raise CorruptFileError(f"{file}: not a metrics record; delete or restore it")
            if metrics.get("done"):
                return metrics
        return None


def _check_same(config_file: pathlib.Path, cfg: Config) -> None:
    import yaml

    try:
        saved = yaml.safe_load(config_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{config_file}: not valid YAML ({e}); restore it to resume the run") from None
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise CorruptFileError(f"{config_file}: not a configuration; restore it to resume this run")
    now, defaults = cfg.to_dict(), type(cfg)().to_dict()
    # run.dir: this very folder; trackers and progress bars do not change what a run computes
    free = {("run", k) for k in ("progress", "threads", "dir", "log_with", "log_every")}

    def before(section: str, key: str):  # a key added to Config after the run started: its default
        values = saved.get(section, {})
        return values[key] if key in values else defaults[section][key]

    diff = [
        f"{section}.{key}: {before(section, key)!r} -> {value!r}"
        for section, values in now.items()
        for key, value in values.items()
        if (section, key) not in free and _norm(before(section, key), key) != _norm(value, key)
    ]
    if diff:
        raise ConfigError(f"{config_file}: cannot resume with a different configuration: {'; '.join(diff)}")


def _norm(value: Any, key: str = "") -> Any:
    if key in ("root", "cache") and isinstance(value, str):
        return os.path.normpath(value)  # a trailing slash is the same folder
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return value


def check_finite(loss: float, run: Run, what: str) -> None:
    """Stop a run whose loss is not finite, before anything of that epoch is saved.

    Args:
        loss: the epoch's mean loss.
        run: the run (its folder is named in the message).
        what: which training and epoch, for the message.

    Raises:
        FloatingPointError: ``loss`` is NaN or infinite.
    """
    if not math.isfinite(loss):
        message = (
            f"{run.dir}: {what}: the loss is {loss}, training diverged or its inputs (backbone, data) are "
            "damaged; the run is stopped, its last checkpoint kept (try a smaller learning rate)"
        )
        run.log(message)
        raise FloatingPointError(message)


def sgd_run(model: nn.Module, cfg: Config, accelerator: Accelerator, run: Run, *, resume: bool, **sgd):
    """The paper's SGD (``sgd`` keyword arguments) with its step schedule, prepared by ``accelerator``
    and restored from ``run``'s checkpoint when resuming: what fine-tuning and the VAE share.

    Args:
        model: the network, on the accelerator's device.
        cfg: supplies the schedule (``finetune.lr_constant_epochs``, ``finetune.lr_halve_every``).
        accelerator: prepares the model and optimizer (DDP across processes).
        run: the run folder whose ``checkpoint.pt`` is restored.
        resume: restore the checkpoint if there is one.

    Returns:
        ``(prepared model, prepared optimizer, scheduler, unwrapped model, checkpoint or None)``.
    """
    opt = torch.optim.SGD(model.parameters(), **sgd)
    schedule = step_lr(cfg.finetune.lr_constant_epochs, cfg.finetune.lr_halve_every)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    prepared, opt = accelerator.prepare(model, opt)
    plain = accelerator.unwrap_model(prepared)
    state = None
    if resume and run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        plain.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        run.log(f"resumed from {run.checkpoint}: epoch {state['epoch']}")
    return prepared, opt, sched, plain, state
