"""The tables of a grid's results: one table per backbone, and the gain of Hebbian pre-training.

    python benchmarks/grid_table.py docs/results/cifar10_grid

reads every ``*results.json`` in the folder (the merged records ``recipes/grid.py`` writes, one
file per command run), groups the records by ``model`` and precision (``run.mixed_precision``: a
backbone's cells at two precisions are two tables, never averaged together; a record without
its precision, written before records carried it, takes its file's top-level ``"precision"``, else
fp32) and writes
``table.md`` (and ``accuracy_<model>[_<precision>].png``) there: per backbone, the table of each
protocol's chosen setting, the summary below, and every cell setting by setting (validation and
test, mean ± std over seeds). Per backbone and labelled share, the summary compares:

- the Hebbian start, tuned: of its fine-tuning protocols (``lpft``, ``finetune``) and their
  settings, the one with the best mean validation top-1 over seeds (over the seeds they all ran,
  :func:`~hebbopt.evaluation.report.shared_seed_means`);
- the random start's best: of every protocol and setting it ran (the frozen probe, LP-FT, and
  fine-tuning with the long budgets), the one with the best mean validation top-1;
- the Hebbian start's frozen probe (``linear``), seed by seed against the tuned one.

Nothing is chosen on the test split. Records are concatenated as they are: each carries its
seed, start, protocol, setting and labelled share, and both commands ran the same committed
configurations (the second restricted by command-line overrides, which the page names).
"""

from __future__ import annotations

import json
import pathlib
import statistics
import sys
from collections import defaultdict

from hebbopt.evaluation.report import plot, shared_seed_means, table


def _best_on_validation(
    records: list[dict], protocols: tuple[str, ...]
) -> tuple[str, int, list[dict]] | None:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        if r["protocol"] in protocols and "diverged" not in r:
            groups[r["protocol"], int(r.get("setting", 0))].append(r)
    if not groups:
        return None
    score = shared_seed_means({k: [(r["seed"], r["val"]["top1"]) for r in v] for k, v in groups.items()})
    key = max(groups, key=lambda k: score[k])  # compared on the seeds every candidate ran
    return (*key, groups[key])


def _pm(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def _mean_std(records: list[dict]) -> str:
    return f"{_pm([r['test']['top1'] for r in records])} ({len(records)})"


def summary(records: list[dict]) -> tuple[str, list[dict]]:
    """The gain table of one backbone (markdown) and its rows (for JSON)."""
    lines = [
        "| labelled | Hebbian, frozen probe | Hebbian, tuned (chosen on validation) "
        "| tuned − probe, per seed | random start's best (chosen on validation) | gain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for regime in sorted({float(r["regime"]) for r in records}):
        at = [r for r in records if float(r["regime"]) == regime]
        hebb = [r for r in at if r["method"] != "none"]
        rand = [r for r in at if r["method"] == "none"]
        probe = [r for r in hebb if r["protocol"] == "linear" and "diverged" not in r]
        tuned = _best_on_validation(hebb, ("lpft", "finetune"))
        best = _best_on_validation(rand, ("linear", "lpft", "finetune"))
        if tuned is None or best is None:
            continue
        t_mean = statistics.mean(r["test"]["top1"] for r in tuned[2])
        b_mean = statistics.mean(r["test"]["top1"] for r in best[2])
        by_seed = {r["seed"]: r["test"]["top1"] for r in probe}
        # a seed whose frozen probe did not run (a sweep of fine-tuning only) has no difference
        diffs = [r["test"]["top1"] - by_seed[r["seed"]] for r in sorted(tuned[2], key=lambda r: r["seed"])
                 if r["seed"] in by_seed]  # fmt: skip
        lines.append(
            f"| {regime:g} % | {_mean_std(probe) if probe else '–'} | {_mean_std(tuned[2])} {tuned[0]} set "
            f"{tuned[1]} | {', '.join(f'{d:+.2f}' for d in diffs) or '–'} | "
            f"{_mean_std(best[2])} {best[0]} set {best[1]} | "
            f"{t_mean - b_mean:+.2f} |"
        )
        rows.append({"regime": regime, "hebbian_tuned": [tuned[0], tuned[1], t_mean],
                     "random_best": [best[0], best[1], b_mean], "gain": t_mean - b_mean,
                     "tuned_minus_probe": diffs})  # fmt: skip
    return "\n".join(lines) + "\n", rows


def by_setting(records: list[dict]) -> str:
    """Every cell of one backbone (markdown): labelled share, start, protocol and setting, with the
    mean ± std over seeds of validation and test top-1 and the seeds it ran, so that the choice the
    summary makes on validation can be read off, setting by setting."""
    groups: dict[tuple[float, str, str, int | None], list[dict]] = defaultdict(list)
    for r in records:
        if "diverged" not in r:
            setting = int(r["setting"]) if r["protocol"] != "linear" and "setting" in r else None
            groups[float(r["regime"]), r["method"], r["protocol"], setting].append(r)

    lines = [
        "| labelled | start | protocol | setting | validation | test | seeds |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    order = {"linear": 0, "lpft": 1, "finetune": 2}
    for (regime, method, protocol, setting), rs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] == "none", order.get(kv[0][2], 3), kv[0][3] or 0)
    ):
        rs = sorted(rs, key=lambda r: r["seed"])
        start = "random" if method == "none" else method
        lines.append(
            f"| {regime:g} % | {start} | {protocol} | {'–' if setting is None else setting} | "
            f"{_pm([r['val']['top1'] for r in rs])} | {_pm([r['test']['top1'] for r in rs])} | "
            f"{', '.join(str(r['seed']) for r in rs)} |"
        )
    return "\n".join(lines) + "\n"


PRECISION_NAMES = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}
"""How a table names the precision its cells ran at (``run.mixed_precision``)."""


def main(folder: str) -> int:
    root = pathlib.Path(folder)
    files = sorted(root.glob("*results.json"))
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    dataset = metric = None
    for f in files:
        data = json.loads(f.read_text())
        dataset, metric = data["dataset"], data["metric"]
        # records written before they carried run.mixed_precision take their file's "precision"
        unrecorded = data.get("precision", "no")
        for r in data["results"]:
            groups[r["model"], r.get("precision", unrecorded)].append(r)
    out, gains = [f"Records: {', '.join(f.name for f in files)}.\n"], {}
    for (model, precision), records in groups.items():
        # cells of one backbone at two precisions are two experiments: a table each, never one mean
        many = sum(m == model for m, _ in groups) > 1
        name = f"{model}, {PRECISION_NAMES.get(precision, precision)}" if many else model
        stub = f"{model}_{precision}" if many else model
        protocols = [p for p in ("linear", "lpft", "finetune") if any(r["protocol"] == p for r in records)]
        text, rows = summary(records)
        gains[name] = rows
        out += [f"\n## {name}\n", table(records, metric, dataset=dataset, methods=["softhebb", "none"],
                                        protocols=protocols), "\n", text if rows else "",
                "\nEvery cell, each setting (top-1 %, mean ± std over the seeds listed):\n\n",
                by_setting(records)]  # fmt: skip
        plot(records, metric, root / f"accuracy_{stub}.png", dataset=dataset, methods=["softhebb", "none"],
             protocols=protocols)  # fmt: skip
    (root / "table.md").write_text("".join(out))
    (root / "gains.json").write_text(json.dumps(gains, indent=1) + "\n")
    print("".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
