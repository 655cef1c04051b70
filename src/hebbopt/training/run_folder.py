"""The run folder: its configuration, identity, log, metrics and checkpoint; resume checks."""

from __future__ import annotations

import math
import os
import pathlib
import time
from typing import Any

from accelerate import Accelerator
from tqdm.auto import tqdm

from hebbopt.files import CorruptFileError, atomic_write_bytes, remove_leftovers
from hebbopt.training.checkpoints import read_json, same_input, save_checkpoint, write_json
from hebbopt.training.config import Config, ConfigError, dump

RUN_KINDS = ("pretrain", "finetune", "semisup")
"""What a run folder holds (``run.json``'s ``kind``): a pre-training (Hebbian or VAE), a
fine-tuning, or a sweep."""

READS = {
    "pretrain": ("data", "model", "pretrain", "vae", "run"),
    "finetune": ("data", "model", "finetune", "probe", "run"),
}
"""The configuration sections each kind of run reads (a sweep: all of them). Resuming compares
those only, so sweeps that evaluate differently share one pre-training folder."""


class Run:
    """A run folder: ``config.yaml`` (resolved), ``run.json`` (kind and input files with their
    sha256), ``log.txt``, ``metrics.json``, ``checkpoint.pt``.

    A folder that already holds a run is refused unless ``resume``; resuming checks that the
    configuration is the one the run started with (``run.progress``, ``run.threads``,
    ``run.log_with`` and ``run.log_every`` may differ,
    and ``run.dir`` is the folder itself, however it is spelled; only the sections the kind of run
    reads count, :data:`READS`), that the folder holds a run of
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
            _check_same(config_file, cfg, READS.get(kind))
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
            if not same_input(before.get(role), now.get(role))
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

    def finish(self, metrics: dict, message: str) -> None:
        """End a run: write its final ``metrics``, delete ``checkpoint.pt``, log ``message``.

        Args:
            metrics: the final metrics, with ``"done": True`` (see :meth:`metrics`).
            message: the closing line of the log.
        """
        self.metrics(metrics)
        if self.main:
            self.checkpoint.unlink(missing_ok=True)
        self.log(message)

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


def _check_same(config_file: pathlib.Path, cfg: Config, sections: tuple[str, ...] | None = None) -> None:
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
        if sections is None or section in sections
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
