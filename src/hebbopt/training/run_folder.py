"""The run folder: its configuration, identity, log, metrics and checkpoint; resume checks (its
lock: :mod:`hebbopt.training.folder_lock`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import time
import weakref
from typing import Any

from accelerate import Accelerator
from tqdm.auto import tqdm

from hebbopt.files import CorruptFileError, atomic_write_bytes, remove_leftovers
from hebbopt.training.checkpoints import read_json, same_input, save_checkpoint, write_json
from hebbopt.training.config import Config, ConfigError, dump
from hebbopt.training.folder_lock import LOCK, FolderLock, stale_note
from hebbopt.training.folder_lock import busy as lock_busy
from hebbopt.training.metric_checks import check_metrics
from hebbopt.training.sections import RESULT_FREE_DATA_KEYS

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
    sha256), ``run.lock`` (while a run holds it), ``log.txt``, ``metrics.json``, ``checkpoint.pt``.

    One run at a time: a run holds its folder from :meth:`start` to :meth:`finish` (or
    :meth:`close`, or the end of its process, an error included) with ``run.lock``, which names its
    process id and host. A folder held by a live process, or by a process on another host (whose
    life cannot be checked), is refused; a lock whose process is gone (same host) is taken over,
    with a message. Runs of one process follow each other, so a folder this process held before
    (a run that failed) is taken over silently; a sweep's runs, each in a folder of its own under
    the sweep's, hold their own folders.

    A folder that already holds a run is refused unless ``resume``; resuming checks that the
    configuration is the one the run started with (``run.progress``, ``run.threads``,
    ``run.log_with``, ``run.log_every``, ``sweep.retry_diverged`` and ``sweep.records`` may differ,
    and ``run.dir`` is the folder itself, however it is spelled; only the sections the kind of run
    reads count, :data:`READS`), that the folder holds a run of
    the same kind, with the same input files (by checksum; a weights file by its tensors, see
    :func:`~hebbopt.training.checkpoints.same_input`), and refuses a folder with run files
    but no ``config.yaml``. Files are written by the main process only.

    ``metrics.json`` carries a checksum (``sha256``) of its content and of the configuration the
    folder records (``config.yaml``): :meth:`done` refuses final metrics that were edited, belong
    to another run, or hold a value that is not finite or out of range
    (:func:`~hebbopt.training.metric_checks.check_metrics`).

    Args:
        cfg: the configuration; ``run.dir`` is the folder.
        accelerator: the run's accelerator (which process is the main one, and barriers).
        resume: accept a folder that already holds a run of this configuration.
        kind: what the run is, one of :data:`RUN_KINDS`.
        inputs: the files the run reads, ``{role: None or file_input(...)}`` (see
            :func:`~hebbopt.training.checkpoints.file_input`).
        may_differ: ``(section, key)`` pairs a resume accepts changed (the caller has checked
            them, e.g. a sweep dropping settings, :mod:`hebbopt.sweeps.settings`).

    Attributes:
        dir: the run folder.
        checkpoint: ``checkpoint.pt`` in it.
        main: whether this is the main process (the one that writes files).

    Raises:
        ConfigError: another live run holds the folder (named with its process id and host), the
            folder holds a run and ``resume`` is false (a finished one is said to be complete, its
            leftover checkpoint removed), or it holds a run of another configuration, kind or
            input file, or run files without ``config.yaml``.
        CorruptFileError: ``config.yaml`` or ``run.json`` is damaged.
    """

    def __init__(
        self, cfg: Config, accelerator: Accelerator, *, resume: bool, kind: str = "pretrain",
        inputs: dict | None = None, may_differ: tuple[tuple[str, str], ...] = (),
    ) -> None:  # fmt: skip
        self.cfg, self.accelerator, self.may_differ = cfg, accelerator, may_differ
        self.kind, self.inputs, self.resume = kind, dict(inputs or {}), resume
        self.dir = pathlib.Path(os.path.normpath(pathlib.Path(cfg.run.dir).expanduser()))
        self.checkpoint = self.dir / "checkpoint.pt"
        self.main = accelerator.is_main_process
        self._started = False
        self._lock: FolderLock | None = None
        busy = lock_busy(self.dir / LOCK, self.dir) if self.main else None
        if busy := self._agreed(busy):  # only the main process reads the lock: it tells the others
            raise ConfigError(busy)
        self._check_folder()

    def _agreed(self, message: str | None) -> str | None:
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [message]
            broadcast_object_list(box, from_process=0)
            message = box[0]
        return message

    def _check_folder(self) -> None:
        config_file = self.dir / "config.yaml"
        if config_file.exists():
            if not self.resume:
                if self._finished_quietly():
                    raise ConfigError(
                        f"{self.dir} holds a finished run (it was already complete): pick another run.dir, "
                        "or pass --resume to read its results"
                    )
                stale = stale_note(self.dir / LOCK)
                raise ConfigError(
                    f"{self.dir} already holds a run: pass --resume to continue it{stale}, "
                    "or pick another run.dir"
                )
            _check_same(config_file, self.cfg, READS.get(self.kind), self.may_differ)
            self._check_identity()
        elif self.resume and any(
            (self.dir / n).exists() for n in ("checkpoint.pt", "metrics.json", "results.json")
        ):
            raise ConfigError(
                f"{self.dir}: config.yaml is missing, so the configuration this run started with is unknown: "
                "cannot resume it; restore config.yaml, or start a new run in another run.dir"
            )

    def _finished_quietly(self) -> bool:
        """Whether the folder holds a finished run (its leftover checkpoint removed); a damaged
        record counts as unfinished here, and is named when the run is resumed."""
        try:
            return self.finished() is not None  # a run starting here tidies what a finished one left
        except CorruptFileError:
            return False

    def _format(self) -> int:
        """The run-folder format ``run.json`` records: 1 for folders from before ``format`` existed."""
        file = self.dir / "run.json"
        saved = read_json(file) if file.exists() else {}
        value = saved.get("format", 1) if isinstance(saved, dict) else 1
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    def _mark_format(self) -> None:
        file = self.dir / "run.json"
        saved = read_json(file) if file.exists() else {"kind": self.kind, "inputs": self.inputs}
        if isinstance(saved, dict):
            write_json(file, {**saved, "format": FORMAT})

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
        """Create the folder, take its lock and record the resolved configuration (call once the
        data and model are known to load, so a configuration that fails leaves no folder behind).

        Raises:
            ConfigError: another run took the folder since this one was set up (it is checked
                again once the lock is held).
        """
        if self._started:
            return
        message = took_over = None
        if self.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                self._lock, took_over = FolderLock.acquire(self.dir / LOCK, self.dir, self.kind)
                weakref.finalize(self, self._lock.release)  # also released when the run is dropped
                self._check_folder()  # what another run may have written before the lock was ours
            except ConfigError as e:
                self.close()
                message = str(e)
            except BaseException:
                self.close()
                raise
        if message := self._agreed(message):
            raise ConfigError(message)
        if self.main:
            if took_over:
                self.log(took_over)
            remove_leftovers(self.dir)  # *.tmp files of atomic writes that were killed
            atomic_write_bytes(self.dir / "config.yaml", dump(self.cfg).encode())
            write_json(self.dir / "run.json", {"kind": self.kind, "inputs": self.inputs, "format": FORMAT,
                                               "precision": self.cfg.run.mixed_precision})  # fmt: skip
        self._started = True
        self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Release the folder (delete ``run.lock``); :meth:`finish` does, and so does the end of the
        process. Safe to call more than once."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

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
        """Write ``metrics.json`` on the main process, with its checksum (``sha256``: of the metrics
        and the configuration the folder records, see :meth:`done`); every process waits.

        Args:
            obj: the metrics; ``"done": True`` marks a finished run (see :meth:`done`).

        Raises:
            FloatingPointError: ``obj`` marks the run done but holds a value that is not finite or
                out of range (:func:`~hebbopt.training.metric_checks.check_metrics`): the run is not
                marked done.
        """
        problem = check_metrics(obj) if obj.get("done") else None
        if problem:
            message = f"{self.dir}: the final metrics cannot be right ({problem}); the run is not marked done"
            self.log(message)
            raise FloatingPointError(message)
        if self.main:
            write_json(self.dir / "metrics.json", {**obj, "sha256": self._seal(obj)})
        self.accelerator.wait_for_everyone()

    def _seal(self, obj: dict) -> str:
        """The checksum of ``obj`` and of the run's configuration as its folder records it: the
        keys ``config.yaml`` holds, as it holds them, so that a later hebbopt whose Config has more
        keys still finds the same checksum (a finished folder survives an upgrade)."""
        config = self.dir / "config.yaml"
        recorded = _recorded_config(config) if config.exists() else {}
        return hashlib.sha256(_canonical(recorded) + b"\0" + _canonical(obj)).hexdigest()

    def finish(self, metrics: dict, message: str) -> None:
        """End a run: write its final ``metrics``, delete ``checkpoint.pt``, log ``message``, release
        the folder.

        Args:
            metrics: the final metrics, with ``"done": True`` (see :meth:`metrics`).
            message: the closing line of the log.
        """
        self.metrics(metrics)
        if self.main:
            self.checkpoint.unlink(missing_ok=True)
        self.log(message)
        self.close()

    def done(self) -> dict | None:
        """The final metrics of a finished run in this folder, checked; a query (nothing is
        written or deleted: :meth:`finished` tidies what a finished run left behind).

        Returns:
            ``metrics.json`` (without its checksum) if it says ``"done"``, else None.

        Raises:
            CorruptFileError: ``metrics.json`` is damaged, has no checksum or fails it (edited, or
                copied from another run), or holds a value that is not finite or out of range; the
                message names it.
        """
        found = self._final_metrics()
        return None if found is None else found[0]

    def finished(self) -> dict | None:
        """:meth:`done`, then what a finished run may have left behind, tidied (what a command
        that reads a finished run back calls): a run killed between writing its final metrics and
        deleting its checkpoint is complete, so the leftover ``checkpoint.pt`` is deleted; metrics
        of a folder from before checksums are sealed. The log says so.

        Returns:
            ``metrics.json`` (without its checksum) if it says ``"done"``, else None.

        Raises:
            CorruptFileError: as :meth:`done`.
        """
        found = self._final_metrics()
        if found is None:
            return None
        metrics, sealed = found
        file = self.dir / "metrics.json"
        if not sealed:  # a run finished before metrics were sealed: range-checked, sealed now
            if self.main:
                write_json(file, {**metrics, "sha256": self._seal(metrics)})
                self._mark_format()
            self.log(f"{file}: written by an older hebbopt without a checksum: range-checked and sealed")
        if self.checkpoint.exists():
            if self.main:
                self.checkpoint.unlink(missing_ok=True)
            self.log(
                f"{self.dir}: the run was already complete (metrics.json); removed the checkpoint.pt its "
                "end left behind"
            )
        return metrics

    def _final_metrics(self) -> tuple[dict, bool] | None:
        """``(metrics, sealed)`` of a finished run, checked (see :meth:`done`), or None."""
        file = self.dir / "metrics.json"
        if not file.exists():
            return None
        metrics = read_json(file)
        if not isinstance(metrics, dict):
            raise CorruptFileError(f"{file}: not a metrics record; delete or restore it")
        if not metrics.get("done"):
            return None
        advice = "delete it (and the run's checkpoint.pt) to run this run again, or restore it"
        sealed = metrics.pop("sha256", None)
        if problem := check_metrics(metrics):
            raise CorruptFileError(f"{file}: {problem}: these cannot be a run's metrics; {advice}")
        if sealed is None and self._format() >= FORMAT:
            raise CorruptFileError(
                f"{file}: no checksum, so these metrics cannot be tied to this run (edited?); {advice}"
            )
        if sealed is not None and sealed != self._seal(metrics):
            raise CorruptFileError(
                f"{file}: checksum mismatch: the metrics were edited, or belong to another run (its "
                f"config.yaml differs); {advice}"
            )
        return metrics, sealed is not None


FORMAT = 2
"""The run-folder format ``run.json`` records. From 2 on, a finished ``metrics.json`` must carry its
checksum; a folder of format 1 (no ``format`` key: written before checksums) is accepted once after
its metrics pass the range checks, and sealed then."""


def resume_problem(folder: pathlib.Path, kind: str) -> str | None:
    """Why a run cannot be resumed in ``folder``, or None: the one rule of ``--resume`` and of
    ``resume=True`` at the top of a command.

    A folder can be resumed when it holds a run: its own ``config.yaml``, or, for a sweep
    (``kind="semisup"``), no run files of its own and runs below it (pre-trainings made first with
    ``recipes/pretrain.py`` into ``<dir>/pretrain/<method>-seed<k>``). A folder that does not exist
    holds nothing to resume (a mistyped ``run.dir``).

    Args:
        folder: the run folder (``run.dir``).
        kind: ``pretrain``, ``finetune``, ``vae`` or ``semisup``.

    Returns:
        The message, or None.
    """
    if not folder.is_dir():
        return f"--resume: {folder} does not exist: there is no run to resume (drop --resume)"
    if (folder / "config.yaml").is_file():
        return None
    own = [f.name for f in folder.iterdir() if f.is_file() and not f.name.endswith(".log")]
    if kind == "semisup" and not own and any(folder.glob("*/*/config.yaml")):
        return None
    return (
        f"--resume: {folder} holds no config.yaml, so the run's configuration is unknown: "
        "restore it, or start a new run in another run.dir"
    )


def _canonical(obj: Any) -> bytes:
    # as JSON reads it back (tuples as lists, keys as strings), keys sorted: the same text before and after
    return json.dumps(json.loads(json.dumps(obj)), sort_keys=True, separators=(",", ":")).encode()


def _recorded_config(config_file: pathlib.Path) -> dict[str, dict[str, Any]]:
    """The configuration a run folder records, as its ``config.yaml`` holds it."""
    import yaml

    try:
        saved = yaml.safe_load(config_file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{config_file}: not valid YAML ({e}); restore it to resume the run") from None
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise CorruptFileError(f"{config_file}: not a configuration; restore it to resume this run")
    return saved


def _saved_config(config_file: pathlib.Path, cfg: Config) -> dict[str, dict[str, Any]]:
    """The configuration a run folder records, every key of ``cfg``'s: a key added to Config after
    the run started takes its default."""
    saved = _recorded_config(config_file)
    defaults = type(cfg)().to_dict()
    return {
        section: {key: saved.get(section, {}).get(key, default) for key, default in values.items()}
        for section, values in defaults.items()
    }


def _check_same(
    config_file: pathlib.Path, cfg: Config, sections: tuple[str, ...] | None = None,
    may_differ: tuple[tuple[str, str], ...] = (),
) -> None:  # fmt: skip
    saved = _saved_config(config_file, cfg)
    # run.dir: this very folder; trackers and progress bars do not change what a run computes
    free = {("run", k) for k in ("progress", "threads", "dir", "log_with", "log_every")} | set(may_differ)
    free |= {("sweep", "retry_diverged"), ("sweep", "records")}  # what a resume reuses, not what it computes
    free |= {("data", k) for k in RESULT_FREE_DATA_KEYS}
    diff = [
        f"{section}.{key}: {saved[section][key]!r} -> {value!r}"
        for section, values in cfg.to_dict().items()
        if sections is None or section in sections
        for key, value in values.items()
        if (section, key) not in free and _norm(saved[section][key], key) != _norm(value, key)
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
        kept = "its last checkpoint kept" if run.checkpoint.exists() else "no checkpoint was written yet"
        message = (
            f"{run.dir}: {what}: the loss is {loss}, training diverged or its inputs (backbone, data) are "
            f"damaged; the run is stopped, {kept} (try a smaller learning rate)"
        )
        run.log(message)
        raise FloatingPointError(message)
