"""The semi-supervised sweep: methods × regimes × seeds, as in the paper's Table 2.

For each seed and method the backbone is pre-trained once (``<dir>/pretrain/<method>-seed<k>``),
then fine-tuned on every regime (``<dir>/finetune/<method>-seed<k>-<s>pct``). After every
fine-tuning run the sweep rewrites ``results.json``, ``table.md`` and ``accuracy.png`` in
``<dir>``, so partial results are readable while it runs; ``resume`` skips finished runs and
continues the interrupted one from its checkpoint.
"""

from __future__ import annotations

import pathlib

from hebbopt.files import atomic_write_bytes
from hebbopt.training.common import Run, build_model, load_splits, make_accelerator, read_json, write_json
from hebbopt.training.config import Config
from hebbopt.training.finetune import finetune
from hebbopt.training.pretrain import pretrain
from hebbopt.training.report import metric_name, plot, table


def semisup(cfg: Config, *, resume: bool = False) -> dict:
    """Run the sweep configured by ``cfg.sweep`` (and every other section).

    The metric is top-1 for datasets of up to 10 classes, else top-5
    (:func:`~hebbopt.training.report.metric_name`), as the paper reports them.

    Args:
        cfg: the configuration; ``run.dir`` holds the sweep, each pre-training and fine-tuning run
            in its own folder under it; ``run.seed`` is replaced by each of ``sweep.seeds``.
        resume: skip finished runs and continue the interrupted one from its checkpoint.

    Returns:
        What ``results.json`` holds: ``dataset``, ``metric`` and ``results``, one entry per
        fine-tuning run (its metrics without the per-epoch ``history``).

    Raises:
        ConfigError: the folder holds another sweep (without ``resume``) or a different config, or
            the model cannot be built.
    """
    accelerator = make_accelerator(cfg)
    run = Run(cfg, accelerator, resume=resume, kind="semisup")
    root = run.dir
    earlier = _earlier(root) if resume else []
    splits = load_splits(cfg, accelerator)
    build_model(cfg, splits, seed=0)  # a model that cannot be built fails here, before any training
    run.start()
    metric = metric_name(splits.num_classes)
    methods = list(cfg.sweep.methods)
    results: list[dict] = []
    for seed in cfg.sweep.seeds:
        for method in methods:
            pre = cfg.replace(
                pretrain={
                    "method": method,
                    "epochs": cfg.sweep.pretrain_epochs.get(method, cfg.pretrain.epochs),
                },
                run={"seed": seed, "dir": str(root / "pretrain" / f"{method}-seed{seed}")},
            )
            backbone = pretrain(pre, resume=resume, accelerator=accelerator, splits=splits)
            for regime in cfg.sweep.regimes:
                sub = pre.replace(
                    finetune={"regime": regime},
                    run={"dir": str(root / "finetune" / f"{method}-seed{seed}-{regime:g}pct")},
                )
                m = finetune(sub, backbone=backbone, method=method, resume=resume, accelerator=accelerator,
                             splits=splits)  # fmt: skip
                results.append({k: v for k, v in m.items() if k != "history"})
                _write(root, results + earlier[len(results):], metric, cfg, methods, run)
                run.log(f"seed {seed} {method} {regime:g}%: test {metric} {m['test'][metric]:.2f}")
    summary = {"dataset": cfg.data.name, "metric": metric, "results": results}
    run.log("\n" + table(results, metric, dataset=cfg.data.name, methods=methods), echo=False)
    return summary


def _write(
    root: pathlib.Path, results: list[dict], metric: str, cfg: Config, methods: list[str], run: Run
) -> None:
    if not run.main:
        return
    write_json(root / "results.json", {"dataset": cfg.data.name, "metric": metric, "results": results})
    text = table(results, metric, dataset=cfg.data.name, methods=methods)
    atomic_write_bytes(root / "table.md", text.encode())
    plot(results, metric, root / "accuracy.png", dataset=cfg.data.name, methods=methods)


def _earlier(root: pathlib.Path) -> list[dict]:
    """The results a resumed sweep wrote before (same config, so the same order): kept in the
    summary files until re-read, so that ``results.json`` never shrinks."""
    file = root / "results.json"
    return list(read_json(file).get("results", [])) if file.exists() else []
