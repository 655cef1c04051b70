"""The sweep's outputs: a table laid out like the paper's Table 2 and an accuracy-vs-regime plot.

Every result carries the evaluation ``protocol`` it was measured with (``finetune``, ``linear``,
``knn``; a result without one is a fine-tuning result, as sweeps wrote them before protocols).
"""

from __future__ import annotations

import math
import pathlib
import statistics
from collections import defaultdict
from typing import Any

PAPER_CIFAR10 = {
    1: {"vae": 22.54, "swta": 30.23, "hpca": 39.75},
    2: {"vae": 26.78, "swta": 36.59, "hpca": 45.51},
    3: {"vae": 29.00, "swta": 41.54, "hpca": 48.80},
    4: {"vae": 31.15, "swta": 45.31, "hpca": 51.28},
    5: {"vae": 32.75, "swta": 48.35, "hpca": 52.20},
    10: {"vae": 45.67, "swta": 58.00, "hpca": 57.35},
    25: {"vae": 68.70, "swta": 69.85, "hpca": 64.77},
    100: {"vae": 85.23, "swta": 85.37, "hpca": 84.38},
}
"""FastHebb Table 2, CIFAR-10 top-1 (%), for side-by-side comparison: ``{regime: {method: accuracy}}``."""


def metric_name(num_classes: int) -> str:
    """The metric the paper reports: top-1 for CIFAR-10, top-5 for the datasets with more classes.

    Args:
        num_classes: the dataset's classes.

    Returns:
        ``"top1"`` up to 10 classes, else ``"top5"``.

    Examples:
        >>> metric_name(10), metric_name(100)
        ('top1', 'top5')
    """
    return "top1" if num_classes <= 10 else "top5"


def _protocol_of(result: dict) -> str:
    return str(result.get("protocol", "finetune"))


def shared_seed_means(candidates: dict[Any, list[tuple[Any, float]]]) -> dict[Any, float]:
    """Each candidate's mean validation score over the seeds all candidates share.

    A candidate that ran on more seeds than another is compared on the seeds both ran, so that no
    candidate wins or loses for having fewer seeds; when the candidates share no seed, each gets
    the mean over its own. Candidates without a score are left out.

    Args:
        candidates: ``{candidate: [(seed, score), ...]}``.

    Returns:
        ``{candidate: mean}`` for the candidates with at least one score.

    Examples:
        >>> shared_seed_means({"a": [(0, 48.0)], "b": [(0, 47.0), (1, 50.0)], "c": []})
        {'a': 48.0, 'b': 47.0}
    """
    ranked = {k: v for k, v in candidates.items() if v}
    shared = set.intersection(*({seed for seed, _ in v} for v in ranked.values())) if ranked else set()
    return {k: statistics.mean(x for seed, x in v if not shared or seed in shared) for k, v in ranked.items()}


def choose(results: list[dict]) -> tuple[list[dict], dict]:
    """Per regime, method and protocol, the fine-tuning setting (``sweep.settings``) with the best
    mean validation top-1 over its seeds: chosen on the validation split, never the test split.

    Settings are compared on the seeds they all have: when one setting ran on more seeds than
    another (say, only the setting chosen on seed 0 ran on seed 1), the means are taken over the
    seeds every ranked setting has, so that no setting wins or loses for having fewer seeds; when
    they share none, each is ranked by the mean over its own. Results without a ``setting`` are
    setting 0; a setting none of whose runs has a validation accuracy, or one of whose runs
    diverged (a ``diverged`` record), ranks last and its runs are never kept; of equals, the
    first setting is kept.

    Args:
        results: sweep results, each with ``regime``, ``method``, optionally ``protocol``,
            ``setting`` and ``val`` (``{"top1": %}``).

    Returns:
        ``(kept, chosen)``: the results of the chosen settings, in their order, and
        ``{(regime, method, protocol): setting}``.

    Examples:
        >>> runs = [{"regime": 1, "method": "none", "setting": k, "val": {"top1": v}, "test": {"top1": t}}
        ...         for k, v, t in [(0, 40.0, 45.0), (1, 42.0, 41.0)]]
        >>> kept, chosen = choose(runs)
        >>> [r["test"]["top1"] for r in kept], chosen
        ([41.0], {(1.0, 'none', 'finetune'): 1})
    """
    groups: dict[tuple[float, str, str], dict[int, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    diverged: set[tuple[float, str, str, int]] = set()
    for r in results:
        key, setting = (float(r["regime"]), r["method"], _protocol_of(r)), int(r.get("setting", 0))
        vals = groups[key][setting]
        if "diverged" in r:
            diverged.add((*key, setting))
        elif isinstance(r.get("val"), dict) and "top1" in r["val"]:
            vals.append((r.get("seed"), float(r["val"]["top1"])))

    def choice(key, by):
        score = shared_seed_means({k: v for k, v in by.items() if (*key, k) not in diverged})
        return max(sorted(by), key=lambda k: score.get(k, -math.inf))

    chosen = {key: choice(key, by) for key, by in groups.items()}
    kept = [
        r for r in results
        if "diverged" not in r and int(r.get("setting", 0)) == chosen[float(r["regime"]), r["method"],
                                                                      _protocol_of(r)]
    ]  # fmt: skip
    return kept, chosen


def summarise(results: list[dict], metric: str) -> dict:
    """Mean and standard deviation over seeds of each regime, method and protocol.

    Args:
        results: sweep results, each with ``regime``, ``method``, ``test`` (as
            :func:`~hebbopt.training.finetune.finetune` returns them) and ``protocol``
            (``"finetune"`` when absent); ``diverged`` records are left out.
        metric: ``"top1"`` or ``"top5"``.

    Returns:
        ``{(regime, method, protocol): (mean, std, n)}``, regime as a float; std is the sample
        standard deviation (0 for one seed), n the number of seeds.

    Examples:
        >>> runs = [{"regime": 5, "method": "hpca", "test": {"top1": a}} for a in (50.0, 52.0)]
        >>> summarise(runs, "top1")
        {(5.0, 'hpca', 'finetune'): (51.0, 1.4142135623730951, 2)}
    """
    groups: dict[tuple[float, str, str], list[float]] = defaultdict(list)
    for r in results:
        if "diverged" not in r:
            groups[float(r["regime"]), r["method"], _protocol_of(r)].append(r["test"][metric])
    return {
        key: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
        for key, v in groups.items()
    }


def _protocols(summary: dict, protocols: list[str] | None) -> list[str]:
    if protocols is not None:
        return list(protocols)
    found = sorted({k[2] for k in summary})
    return sorted(found, key=lambda p: (p != "finetune", found.index(p)))


def table(
    results: list[dict], metric: str, *, dataset: str, methods: list[str], protocols: list[str] | None = None
) -> str:
    """A markdown table: one row per regime, protocol and method, mean ± std over seeds (and the
    paper's CIFAR-10 fine-tuning figure beside fine-tuning rows when the dataset is CIFAR-10). With
    a grid of settings, each row is its setting chosen on validation (:func:`choose`), named in a
    last column.

    Args:
        results: sweep results, as :func:`summarise` takes them.
        metric: ``"top1"`` or ``"top5"``.
        dataset: the dataset's name, for the header (``cifar10`` adds the paper's column).
        methods: the methods, in row order within each protocol; others are left out.
        protocols: the protocols, in row order within each regime (default: those in ``results``,
            ``finetune`` first); others are left out.

    Returns:
        The table, ending with a newline.

    Examples:
        >>> runs = [{"regime": 5, "method": "hpca", "test": {"top1": a}} for a in (50.0, 52.0)]
        >>> print(table(runs, "top1", dataset="cifar10", methods=["hpca"]), end="")
        | regime | method | protocol | cifar10 top-1 (%) | seeds | paper (FastHebb Table 2) |
        |---|---|---|---:|---:|---:|
        | 5 % | hpca | finetune | 51.00 ± 1.41 | 2 | 52.20 |
    """
    grid = any("setting" in r for r in results)
    notes = _notes(results)
    results, chosen = choose(results)
    summary = summarise(results, metric)
    paper = dataset == "cifar10" and metric == "top1"
    label = "top-1" if metric == "top1" else "top-5"
    head = f"| regime | method | protocol | {dataset} {label} (%) | seeds |" + (
        " paper (FastHebb Table 2) |" if paper else ""
    )
    head += " setting (chosen on validation) |" if grid else ""
    lines = [head, "|---|---|---|---:|---:|" + ("---:|" if paper else "") + ("---:|" if grid else "")]
    for regime in sorted({k[0] for k in summary}):
        for protocol in _protocols(summary, protocols):
            for method in methods:
                if (regime, method, protocol) not in summary:
                    continue
                mean, std, n = summary[regime, method, protocol]
                row = f"| {regime:g} % | {method} | {protocol} | {mean:.2f} ± {std:.2f} | {n} |"
                if paper:
                    ref = PAPER_CIFAR10.get(int(regime) if regime == int(regime) else -1, {}).get(method)
                    row += f" {ref:.2f} |" if ref is not None and protocol == "finetune" else " – |"
                if grid:
                    tuned = protocol in ("finetune", "lpft")
                    row += f" {chosen[regime, method, protocol]} |" if tuned else " – |"
                lines.append(row)
    return "\n".join(lines + notes) + "\n"


def _notes(results: list[dict]) -> list[str]:
    """Lines under the table: each diverged cell, the precision the records were computed in, and
    whether the grid is incomplete: a regime, start and protocol without every setting on some seed
    (then none can be chosen), or a seed without the setting chosen on the seeds that ran every one
    (:func:`choose`; the grid of ``sweep.tune_seeds``)."""
    notes = []
    for r in results:
        if "diverged" in r:
            setting = f" setting {r['setting']}" if "setting" in r else ""
            notes.append(
                f"- diverged: {r['method']} {_protocol_of(r)}{setting}, {float(r['regime']):g} %, seed "
                f"{r['seed']} (never chosen): {r['diverged']}"
            )
    seeds = {r.get("seed") for r in results}
    cells: dict[tuple[float, str, str], set] = defaultdict(set)
    settings: dict[tuple[float, str, str], set] = defaultdict(set)
    for r in results:
        key = (float(r["regime"]), r["method"], _protocol_of(r))
        cells[key].add((r.get("setting", 0), r.get("seed")))
        settings[key].add(r.get("setting", 0))
    precisions = sorted({str(r["precision"]) for r in results if "precision" in r})
    if precisions:
        notes.append(f"- precision (run.mixed_precision): {', '.join(precisions)}")
    low = sorted({str(r["statistics_dtype"]) for r in results if "statistics_dtype" in r})
    if low:
        notes.append(f"- Hebbian statistics (pretrain.statistics_dtype): {', '.join(low)}")
    speeds = _speeds(results)
    if speeds:
        notes.append(f"- images/s (median over the cells that measured it): {speeds}")
    missing = sum(len(_expected(k, settings[k], seeds, cells[k], results) - cells[k]) for k in cells)
    if missing:
        notes.append(f"- incomplete: {missing} cell(s) of the grid have no record; the table shows what ran")
    return ["", *notes] if notes else []


def _expected(key: tuple, settings: set, seeds: set, cells: set, results: list[dict]) -> set:
    """The ``(setting, seed)`` cells a complete grid has for one regime, start and protocol: every
    setting on the seeds that ran every one (on every seed if none did), and on each other seed the
    setting chosen on those (the grid of ``sweep.tune_seeds``)."""
    full = {seed for seed in seeds if {(k, seed) for k in settings} <= cells}
    if not full:
        return {(k, seed) for k in settings for seed in seeds}
    on_full = [r for r in results if r.get("seed") in full and (float(r["regime"]), r["method"],
                                                               _protocol_of(r)) == key]  # fmt: skip
    pick = choose(on_full)[1][key]
    return cells | {(pick, seed) for seed in seeds}


SPEED_KEYS = {
    "pretrain_images_per_s": "Hebbian pre-training",
    "features_images_per_s": "frozen features",
    "train_images_per_s": "fine-tuning",
}
"""The records' throughput fields, as the table's notes name them (every phase a cell ran)."""


def _speeds(results: list[dict]) -> str:
    """``phase N (protocol M, ...)`` for every throughput field the records hold, medians over cells."""
    parts = []
    for key, phase in SPEED_KEYS.items():
        by: dict[str, list[float]] = defaultdict(list)
        for r in results:
            if isinstance(r.get(key), int | float) and "diverged" not in r:
                by[_protocol_of(r) if key == "train_images_per_s" else ""].append(float(r[key]))
        if not by:
            continue
        text = ", ".join(f"{k} {statistics.median(v):.0f}" if k else f"{statistics.median(v):.0f}"
                         for k, v in sorted(by.items()))  # fmt: skip
        parts.append(f"{phase} {text}")
    return "; ".join(parts)


def plot(
    results: list[dict],
    metric: str,
    path: pathlib.Path,
    *,
    dataset: str,
    methods: list[str],
    protocols: list[str] | None = None,
) -> None:
    """Accuracy against the labelled share (log axis), one line per method and protocol, error bars =
    std over seeds (the settings chosen on validation, :func:`choose`).

    Args:
        results: sweep results, as :func:`summarise` takes them.
        metric: ``"top1"`` or ``"top5"``.
        path: the image file to write (its folder is created); the format follows the suffix.
        dataset: the dataset's name, for the title.
        methods: the methods to draw.
        protocols: the protocols to draw (default: those in ``results``); lines are labelled
            ``method`` when there is only ``finetune``, else ``method (protocol)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(choose(results)[0], metric)
    shown = _protocols(summary, protocols)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for protocol in shown:
        for method in methods:
            points = sorted((k[0], v) for k, v in summary.items() if k[1] == method and k[2] == protocol)
            if points:
                xs = [p[0] for p in points]
                name = method if shown == ["finetune"] else f"{method} ({protocol})"
                ax.errorbar(xs, [p[1][0] for p in points], yerr=[p[1][1] for p in points], marker="o",
                            capsize=3, label=name)  # fmt: skip
    ax.set_xscale("log")
    regimes = sorted({k[0] for k in summary})
    ax.set_xticks(regimes, [f"{r:g}" for r in regimes])
    ax.set_xlabel("labelled training images (%)")
    ax.set_ylabel(f"test {'top-1' if metric == 'top1' else 'top-5'} accuracy (%)")
    evaluation = "fine-tuning" if shown == ["finetune"] else "evaluation"
    ax.set_title(f"{dataset}: pre-training, then {evaluation} on the labelled share")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing to draw while every cell so far diverged
        ax.legend()
    fig.tight_layout()
    from hebbopt.files import atomic_write

    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png"))
    plt.close(fig)
