"""Committed records: every finished cell of a sweep also kept in a file of its own
(``sweep.records``, e.g. ``docs/results/<name>/results.json`` in a git checkout), so that the sweep
resumed on another machine, into an empty folder, skips the cells the file holds.

A record is reused only for the very cell it was computed for: it carries ``cell``, a digest of
everything the cell's result depends on (its protocol, the ``data``, ``model``, ``pretrain``, ``finetune`` and
``probe`` sections, the seed and the precision, as written in the configuration, so that paths
given as ``$HEBBOPT_DATA/...`` match across machines), and ``backbone_sha256``, the digest of the
pre-trained weights it evaluated (None for a random start). Before a Hebbian backbone exists the
records of one method and seed are reused only if the file holds every one of its cells, all with
one backbone: then the pre-training is skipped too. Otherwise the backbone is pre-trained (or read
back from its folder), and only records of that same backbone are reused, so a cell is never mixed
with another pre-training; the others run again and replace theirs. At most the cell that was
running when a machine went away is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

from hebbopt.files import CorruptFileError
from hebbopt.training.checkpoints import file_input, read_json, write_json
from hebbopt.training.config import Config
from hebbopt.training.metric_checks import check_metrics
from hebbopt.training.sections import RESULT_FREE_DATA_KEYS

UNREAD_RUN_KEYS = ("dir", "progress", "threads", "log_with", "log_every", "checkpoint_every")
"""Keys of section ``run`` that do not change a result (where it runs, how it reports)."""

PINNED_DATA_KEYS = {"workers": 0}
"""Keys of :data:`~hebbopt.training.sections.RESULT_FREE_DATA_KEYS` that were part of the digest
before they were known to change no result: every value counts as the default, which keeps the
committed digests (the others are left out of the digest)."""


ADDED_KEYS = {("pretrain", "statistics_dtype"): "float32", ("probe", "calibrate_norm"): False}
"""Keys added to the configuration after records were first committed, with the value that
computes what was computed before them: at that value a key is left out of the digest, so that a
record committed before it still matches its cell."""


def cell_digest(cfg: Config, protocol: str) -> str:
    """The digest of everything a cell's result depends on (module docstring).

    Args:
        cfg: the cell's configuration (as the sweep hands it to the run).
        protocol: how the cell evaluates (``sweep.protocols``' entry).

    Returns:
        A sha256 hex digest.
    """
    d = cfg.to_dict()
    what: dict = {
        "protocol": protocol,
        **{s: d[s] for s in ("data", "model", "pretrain", "finetune", "probe")},
    }
    what["run"] = {k: v for k, v in d["run"].items() if k not in UNREAD_RUN_KEYS}
    what["data"] = {k: v for k, v in what["data"].items() if k not in RESULT_FREE_DATA_KEYS}
    what["data"] |= PINNED_DATA_KEYS
    for (section, key), before in ADDED_KEYS.items():
        if what[section].get(key) == before:
            del what[section][key]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def backbone_digest(backbone: str | pathlib.Path | None) -> str | None:
    """The identity of a backbone's weights (the digest of its tensors), None for a random start.

    Args:
        backbone: the weights file, or None.

    Returns:
        The digest of its tensors (of its bytes for a file without one), or None.
    """
    if backbone is None:
        return None
    record = file_input(backbone, "backbone")
    return record.get("weights", record["sha256"])


def _read(path: pathlib.Path) -> list[dict]:
    """The records a file holds (none if it does not exist).

    Raises:
        CorruptFileError: the file is not a sweep's records, or a record is damaged (named).
    """
    if not path.exists():
        return []
    saved = read_json(path)
    results = saved.get("results") if isinstance(saved, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise CorruptFileError(f"{path}: not a sweep's records (sweep.records)")
    for i, r in enumerate(results):
        if problem := check_metrics(r):
            raise CorruptFileError(f"{path}: results[{i}]: {problem}; restore it from git")
    return list(results)


class Records:
    """The committed records of a sweep (``sweep.records``), read at the start (the cells it reuses)
    and again before each write: a finished cell joins what the file holds then, so two sweeps that
    share the file (two terminals, or a checkout updated while a sweep runs) keep each other's cells.

    Args:
        path: the file (created with its folder when the first cell finishes); None: no records.
        main: whether this process writes (the main process of a multi-process run).
        dataset: the dataset's name, for the file.
        metric: the sweep's metric, for the file.

    Raises:
        CorruptFileError: the file is not a sweep's records, or a record is damaged (named).
    """

    def __init__(self, path: str | pathlib.Path | None, *, main: bool, dataset: str, metric: str) -> None:
        self.path = pathlib.Path(os.path.expandvars(path)).expanduser() if path else None
        self.main, self.dataset, self.metric = main, dataset, metric
        self.results: list[dict] = [] if self.path is None else _read(self.path)

    def _of(self, cfg: Config, protocol: str) -> list[dict]:
        cell = cell_digest(cfg, protocol)
        return [r for r in self.results if r.get("cell") == cell]

    def all_held(self, cells: list[tuple[Config, str]]) -> bool:
        """Whether the file holds every one of these cells (of one method and seed), all computed
        from one backbone: then neither they nor their pre-training need to run.

        Args:
            cells: ``(configuration, protocol)`` of each cell.

        Returns:
            True when every cell has a record and they share one backbone.
        """
        if self.path is None or not cells:
            return False
        found = [self._of(c, protocol) for c, protocol in cells]
        return all(found) and len({f[0].get("backbone_sha256") for f in found}) == 1

    def find(
        self, cfg: Config, protocol: str, backbone: str | None, *, any_backbone: bool = False
    ) -> dict | None:
        """The record of this cell computed from ``backbone`` (its digest), None if there is none.

        Args:
            cfg: the cell's configuration.
            protocol: how it evaluates.
            backbone: :func:`backbone_digest` of the weights it evaluates.
            any_backbone: match whatever backbone (after :meth:`all_held` said they agree).

        Returns:
            The record, or None.
        """
        for r in self._of(cfg, protocol):
            if any_backbone or r.get("backbone_sha256") == backbone:
                return r
        return None

    def add(self, cfg: Config, protocol: str, record: dict, backbone: str | None) -> dict:
        """Keep a finished cell's record (replacing an older one of the same cell) and write the file.

        The main process reads the file again first and adds the record to what it holds now: the
        records another sweep wrote since this one started are kept, and one taken out of the file
        by hand stays out.

        Args:
            cfg: the cell's configuration.
            protocol: how it evaluates.
            record: its record, as ``results.json`` lists it.
            backbone: :func:`backbone_digest` of the weights it evaluated.

        Returns:
            The record with its ``cell`` and ``backbone_sha256``.

        Raises:
            CorruptFileError: the file was damaged since the sweep read it (it is not written over;
                the cell's result stays in its run folder, and a resume records it).
        """
        record = {**record, "cell": cell_digest(cfg, protocol), "backbone_sha256": backbone}
        if self.path is None:
            return record
        # What this sweep reuses stays what it read plus its own cells, alike on every process (they
        # must agree on which cells run); what it writes is the file as it is now, plus this cell.
        self.results = [r for r in self.results if r.get("cell") != record["cell"]] + [record]
        if self.main:
            now = [r for r in _read(self.path) if r.get("cell") != record["cell"]] + [record]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, {"dataset": self.dataset, "metric": self.metric, "results": now})
        return record
