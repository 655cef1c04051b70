"""The folder index of each ``sweep.settings`` entry, kept across resumes that drop settings.

A sweep runs each fine-tuning setting's cells in folders named by the setting's index
(``<method>-seed<s>-<r>pct-set<i>``). The list the sweep started with is kept in
``settings.json`` of its folder (a folder from before that file: the list its ``config.yaml``
recorded). A resume may leave out settings none of whose cells finished (say, one whose cells
diverged); the settings it keeps run under their first index, so their finished cells are found
again. Adding a setting or changing one is a different configuration, refused as before.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from hebbopt.files import CorruptFileError
from hebbopt.training.checkpoints import read_json, write_json
from hebbopt.training.config import Config, ConfigError

INDEX_FILE = "settings.json"


def setting_indices(folder: pathlib.Path, cfg: Config, resume: bool) -> tuple[list[int] | None, list[dict]]:
    """Each setting's folder index, and the list the indices refer to.

    Args:
        folder: the sweep's folder (``run.dir``).
        cfg: the sweep's configuration.
        resume: whether the sweep resumes its folder.

    Returns:
        ``(indices, space)``: ``indices[j]`` is the folder index of ``cfg.sweep.settings[j]`` in
        ``space``, the list the sweep started with; ``indices`` is ``None`` when some setting is
        not in ``space`` (the resume check then refuses the changed configuration).

    Raises:
        ConfigError: a setting left out on resume has a finished cell.
    """
    new = list(cfg.sweep.settings)
    space = _started_with(folder) if resume else None
    if space is None or _canon(space) == _canon(new):
        return list(range(len(new))), new
    known = [_canon(s) for s in space]
    if any(_canon(s) not in known for s in new):
        return None, space
    indices = [known.index(_canon(s)) for s in new]
    for k in sorted(set(range(len(space))) - set(indices)):
        done = [p.parent for p in sorted(folder.glob(f"*/*-set{k}/metrics.json")) if _finished(p)]
        if done:
            raise ConfigError(
                f"{folder}: sweep.settings[{k}] ({_canon(space[k])}) is left out of this resume, but its "
                f"cell {done[0]} finished: keep the setting to resume this sweep, or start another run.dir"
            )
    return indices, space


def keep(folder: pathlib.Path, space: list[dict]) -> None:
    """Write ``settings.json`` (the list the indices refer to) unless the folder has it.

    Args:
        folder: the sweep's folder.
        space: the settings the sweep started with.
    """
    file = folder / INDEX_FILE
    if not file.exists():
        write_json(file, {"settings": space})


def _started_with(folder: pathlib.Path) -> list[dict] | None:
    file = folder / INDEX_FILE
    if file.exists():
        saved = read_json(file)
        if not isinstance(saved, dict) or not isinstance(saved.get("settings"), list):
            raise CorruptFileError(f"{file}: not a list of settings; restore it, or start another run.dir")
        return saved["settings"]
    config = folder / "config.yaml"
    if not config.exists():
        return None
    import yaml

    try:
        recorded = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return None  # the resume check names the damaged file
    settings = (recorded or {}).get("sweep", {}).get("settings") if isinstance(recorded, dict) else None
    return settings if isinstance(settings, list) else None


def _finished(metrics: pathlib.Path) -> bool:
    try:
        saved = read_json(metrics)
    except CorruptFileError:
        return False
    return isinstance(saved, dict) and saved.get("done") is True


def _canon(value: Any) -> str:
    """One spelling per value: 1e-3 and 0.001, 3 and 3.0 are the same setting."""

    def norm(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [norm(x) for x in v]
        if isinstance(v, float) and math.isfinite(v) and v == int(v):
            return int(v)
        return v

    return json.dumps(norm(value), sort_keys=True)
