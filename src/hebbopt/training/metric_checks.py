"""Range checks of a run's metrics: what no finished run can have measured (a percentage outside
[0, 100], a count that is not an integer >= 0, a number that is not finite, a negative duration).
A run folder refuses to seal such metrics, and a records file refuses to hold them.
"""

from __future__ import annotations

import math
import re
from typing import Any

PERCENT_KEYS = ("top1", "top5", "map", "val_top1", "regime")
"""Metrics in % (as :func:`check_metrics` checks them, at any depth), with ``p@<k>``."""

COUNT_KEYS = ("labelled", "validation", "images", "queries", "queries_with_relevant", "features",
              "best_epoch", "epoch", "stage", "k")  # fmt: skip
"""Metrics that count something (integers >= 0, at any depth)."""


def check_metrics(obj: Any, where: str = "") -> str | None:
    """What is wrong with a run's metrics, if anything: a number that is not finite, a percentage
    (:data:`PERCENT_KEYS`, ``p@<k>``) outside [0, 100], a count (:data:`COUNT_KEYS`) that is not an
    integer >= 0, or ``seconds`` below 0.

    Args:
        obj: the metrics (nested dicts and lists).
        where: the path of ``obj`` in the record, for the message.

    Returns:
        The first problem, naming the key (e.g. ``"test.top1 is 700.0, not a percentage in [0, 100]"``),
        or None.

    Examples:
        >>> check_metrics({"test": {"top1": 700.0}})
        'test.top1 is 700.0, not a percentage in [0, 100]'
        >>> check_metrics({"test": {"top1": 70.0, "top5": 95.5}, "labelled": 18}) is None
        True
    """
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{where}.{key}" if where else str(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and not math.isfinite(value):
                return f"{path} is {value}, not a finite number"
            if number and (key in PERCENT_KEYS or re.fullmatch(r"p@\d+", str(key))) and not 0 <= value <= 100:
                return f"{path} is {value}, not a percentage in [0, 100]"
            if (
                key in COUNT_KEYS
                and value is not None
                and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            ):
                return f"{path} is {value!r}, not a count (an integer >= 0)"
            if key == "seconds" and number and value < 0:
                return f"{path} is {value}, not a duration"
            if problem := check_metrics(value, path):
                return problem
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            if isinstance(value, float) and not math.isfinite(value):
                return f"{where}[{i}] is {value}, not a finite number"
            if problem := check_metrics(value, f"{where}[{i}]"):
                return problem
    return None
