"""Experiment trackers (TensorBoard, wandb, MLflow, ...) through accelerate: ``run.log_with``.

With ``run.log_with: tensorboard`` (any of accelerate's ``log_with`` values), the command's
accelerator is made with those trackers and its run folder as the tracker run
(:func:`accelerator_kwargs`); the first run that starts on that accelerator opens the trackers
(``accelerator.init_trackers``, the resolved configuration as hyper-parameters), and the runs of a
sweep log into the same tracker run, each under its folder's path relative to the sweep's folder
(``pretrain/hpca-seed0/...``, ``finetune/hpca-seed0-5pct/...``). TensorBoard's event files are
written into the run folder itself: ``tensorboard --logdir runs`` shows every command.

What is logged, on the main process only (accelerate's trackers live there; the other processes
do nothing): losses, accuracies and learning rates as scalars; per-layer Hebbian diagnostics
(``max|ΔW|/max|W|``, the mean neuron norm and, for competitive rules, the fraction of neurons that
ever won, from :attr:`hebbopt.HebbianOptimizer.last_update`) every ``run.log_every`` steps, the
optimizer's diagnostics turned on for those steps only, so the other steps pay neither the weight
copy, the winners' argmax nor a host synchronisation (the fraction that ever won therefore counts
the batches of those steps); weight histograms (TensorBoard) and the first layer's filter grid
(:func:`hebbopt.filters.filter_grid`; TensorBoard and trackers with ``log_images``) at each epoch;
the sweep's results table as text at the end.
"""

from __future__ import annotations

import pathlib
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from hebbopt.filters import filter_grid

# The folder of the run that opened the trackers of an accelerator (the sweep's, or a lone run's):
# the runs started later on it log under their path relative to that folder.
_ROOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def log_with(cfg: Any) -> list[str]:
    """The trackers ``run.log_with`` asks for, as a list of accelerate tracker names.

    Args:
        cfg: the configuration (``run.log_with``: None, ``"none"``, a name, or a list of names).

    Returns:
        The names, e.g. ``["tensorboard"]``; empty when no tracker is asked for.

    Examples:
        >>> from types import SimpleNamespace
        >>> log_with(SimpleNamespace(run=SimpleNamespace(log_with="tensorboard")))
        ['tensorboard']
        >>> log_with(SimpleNamespace(run=SimpleNamespace(log_with="none")))
        []
    """
    value = getattr(cfg.run, "log_with", None)  # configurations made before run.log_with existed
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    return [str(n).lower() for n in names if str(n).lower() not in ("none", "")]


def accelerator_kwargs(cfg: Any) -> dict:
    """The :class:`accelerate.Accelerator` arguments that open ``run.log_with``'s trackers.

    The project folder is the run folder's parent and the tracker run is named after the run
    folder, so that file-based trackers (TensorBoard) write into the run folder itself.

    Args:
        cfg: the configuration (``run.log_with``, ``run.dir``).

    Returns:
        ``{}`` without trackers, else ``{"log_with": [...], "project_dir": ...}``.

    Raises:
        ValueError: a tracker whose package is not installed (accelerate would silently drop it).
    """
    names = log_with(cfg)
    if not names:
        return {}
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    missing = [n for n in names if n != "all" and n not in available]
    if missing:
        raise ValueError(
            f"run.log_with {', '.join(missing)}: the tracker's package is not installed "
            f"(installed: {', '.join(sorted(available)) or 'none'}); for tensorboard: "
            "pip install 'hebbopt[recipes]'"
        )
    folder = _folder(cfg.run.dir)
    return {"log_with": names, "project_dir": str(folder.parent)}


def _folder(path: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(path).expanduser().resolve()


def _hparams(cfg: Any) -> dict:
    """The configuration flattened to ``section.key`` scalars (what every tracker takes)."""
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            ok = value is None or isinstance(value, (bool, int, float, str))
            flat[f"{section}.{key}"] = value if ok else str(value)
    return flat


class Tracker:
    """One run's view of the accelerator's trackers: tags under the run's path, main process only.

    The first tracker made on an accelerator with trackers opens them (``init_trackers``) and owns
    them: its :meth:`close` finishes them. Trackers of later runs on the same accelerator (a
    sweep's pre-trainings and fine-tunings) log into the same tracker run, their tags prefixed
    with their folder relative to the owner's.

    Args:
        cfg: the run's configuration (``run.log_with``, ``run.log_every``, ``run.dir``).
        accelerator: the run's accelerator, made with :func:`accelerator_kwargs` (an accelerator
            without trackers makes every method a no-op).

    Attributes:
        active: whether anything is logged here (trackers configured and open, main process).
        every: ``run.log_every``: per-step values are logged at the steps that are multiples of it.
        prefix: the tag prefix, ``""`` for the owner, e.g. ``"pretrain/hpca-seed0/"`` in a sweep.
    """

    def __init__(self, cfg: Any, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.every = max(1, int(getattr(cfg.run, "log_every", 50)))
        folder = _folder(cfg.run.dir)
        self.owner = bool(log_with(cfg)) and accelerator not in _ROOTS and bool(accelerator.log_with)
        if self.owner:
            _ROOTS[accelerator] = folder
            accelerator.init_trackers(folder.name or "hebbopt", config=_hparams(cfg))
        root = _ROOTS.get(accelerator)
        self.active = root is not None and accelerator.is_main_process and bool(accelerator.trackers)
        self.prefix = ""
        if root is not None and folder != root:
            rel = folder.relative_to(root) if folder.is_relative_to(root) else pathlib.Path(folder.name)
            self.prefix = rel.as_posix() + "/"

    def due(self, step: int) -> bool:
        """Whether per-step values are logged at ``step`` (a multiple of ``run.log_every``).

        Args:
            step: the run's global step, from 0.

        Returns:
            True when active and ``step % every == 0``.
        """
        return self.active and step % self.every == 0

    def log(self, values: Mapping[str, Any], step: int) -> None:
        """Log scalars (numbers or 0-d tensors) or text, tags prefixed with :attr:`prefix`.

        Args:
            values: ``{tag: value}``; tensors are read with ``.item()`` (a host synchronisation:
                call this only at logged steps).
            step: the run's global step.
        """
        if not self.active:
            return
        out = {}
        for tag, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            out[self.prefix + tag] = value
        self.accelerator.log(out, step=step)

    def hebbian(self, optimizer: Any, step: int) -> None:
        """Log the per-layer diagnostics of the optimizer's last step and its learning rates.

        Tags ``hebbian/<layer>/<key>`` for every entry of
        :attr:`~hebbopt.HebbianOptimizer.last_update`: ``update`` (max|ΔW|/max|W|), ``norm`` (mean
        neuron norm ‖w_n‖) and, for competitive rules, ``ever_won`` (the fraction of neurons that
        won a sample); and ``hebbian/lr`` (``hebbian/lr/<i>`` per param group when there are
        several).

        Args:
            optimizer: a :class:`~hebbopt.HebbianOptimizer` that stepped with ``diagnostics`` on.
            step: the run's global step.
        """
        if not self.active:
            return
        values: dict[str, Any] = {}
        for name, d in optimizer.last_update.items():
            for key, value in d.items():
                values[f"hebbian/{name}/{key}"] = value
        groups = optimizer.param_groups
        for i, group in enumerate(groups):
            values["hebbian/lr" if len(groups) == 1 else f"hebbian/lr/{i}"] = float(group["lr"])
        self.log(values, step)

    def _tensorboard(self):
        """TensorBoard's ``SummaryWriter`` among the trackers, or None."""
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                return self.accelerator.get_tracker("tensorboard", unwrap=True)
        return None

    def filters(self, layer: nn.Module | None, step: int, tag: str = "filters") -> None:
        """Log the filter grid of ``layer`` (:func:`~hebbopt.filters.filter_grid`) as an image.

        Written with TensorBoard's ``add_image``, and with ``log_images`` for the other trackers
        that have it (wandb, ...).

        Args:
            layer: a Conv2d (None, or a layer without a 4-d weight: nothing is logged).
            step: the run's global step.
            tag: the image's tag (under :attr:`prefix`).
        """
        if not self.active or layer is None or getattr(layer, "weight", None) is None:
            return
        if layer.weight.dim() != 4:
            return
        grid = filter_grid(layer)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                writer = tracker.tracker
                writer.add_image(self.prefix + tag, grid, global_step=step)
                writer.flush()
            elif hasattr(tracker, "log_images"):
                image = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
                tracker.log_images({self.prefix + tag: [image]}, step=step)

    def histograms(self, layers: Mapping[str, nn.Module], step: int) -> None:
        """Log each layer's weights as a histogram (TensorBoard only: the trackers without
        histograms are skipped).

        Args:
            layers: ``{name: module}`` with a ``weight``.
            step: the run's global step.
        """
        writer = self._tensorboard() if self.active else None
        if writer is None:
            return
        for name, module in layers.items():
            writer.add_histogram(f"{self.prefix}weights/{name}", module.weight.detach().float().cpu(), step)
        writer.flush()

    def close(self) -> None:
        """Finish the trackers if this run opened them (the sweep's or a lone run's last call)."""
        if not self.owner:
            return
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()
        _ROOTS.pop(self.accelerator, None)
