"""Linear-probe feature scaling, chosen on the validation split: ``none`` (SoftHebb's probe),
``standardize`` and ``l2`` (:func:`hebbopt.evaluation.linear.feature_scaler`) on the frozen features
of finished pre-training runs, at the sweep's regimes. Prints a table and writes JSON.

    HEBBOPT_DATA=../shared/datasets python benchmarks/probe_normalize.py \
        --config recipes/configs/cifar10_softhebb.yaml \
        --backbone softhebb:0:runs/cifar10_softhebb/pretrain/softhebb-seed0/backbone.safetensors \
        --regimes 1 100 --out benchmarks/results/probe_normalize.json

``--backbone method:seed:path`` may repeat; ``none:<seed>:`` (no path) is the random start.
Test accuracies are recorded beside, but only the validation column may choose.
``--flip`` trains the probes with random horizontal flips (``probe.flip``).
``--summarize A.json B.json ...`` reads such files back and prints mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

from hebbopt.evaluation import NORMALIZE, linear_probe
from hebbopt.sweeps.semisup import _Features
from hebbopt.training import load
from hebbopt.training.finetune import subsets
from hebbopt.training.setup import load_splits, make_accelerator


def summarize(files: list[str]) -> None:
    """Mean ± std (sample std, n − 1, over seeds) of every (method, normalize, regime) in the files."""
    cells: dict = {}
    for file in files:
        for r in json.loads(pathlib.Path(file).read_text())["rows"]:
            how = r["normalize"] + (" + flip" if r.get("flip") else "")
            cells.setdefault((r["method"], how, r["regime"]), {})[r["seed"]] = r
    print("| method | normalize | regime | test top-1 | val top-1 | seeds |")
    print("|---|---|---:|---:|---:|---|")
    order = sorted(cells, key=lambda c: (c[2], c[0], c[1]))  # by regime, then method, then scaling
    for method, how, regime in order:
        by_seed = cells[method, how, regime]
        tests = [r["test_top1"] for r in by_seed.values()]
        test = f"{statistics.mean(tests):.2f} ± {statistics.stdev(tests) if len(tests) > 1 else 0:.2f}"
        val = statistics.mean(r["val_top1"] for r in by_seed.values())
        print(f"| {method} | {how} | {regime:g} % | {test} | {val:.2f} | {sorted(by_seed)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summarize", nargs="+", help="JSON files written by --out: print mean ± std and stop")
    ap.add_argument("--config")
    ap.add_argument("--backbone", action="append", help="method:seed:path")
    ap.add_argument("--regimes", type=float, nargs="+", default=[100])
    ap.add_argument("--normalize", nargs="+", default=list(NORMALIZE), choices=NORMALIZE)
    ap.add_argument("--flip", action="store_true", help="random horizontal flips in the probe (probe.flip)")
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    if args.summarize:
        return summarize(args.summarize)
    if not (args.config and args.backbone and args.out):
        ap.error("--config, --backbone and --out are needed (or --summarize)")
    rows = []
    for spec in args.backbone:
        method, seed, path = spec.split(":", 2)
        overrides = ["--run.seed", seed, "--sweep.regimes", json.dumps(args.regimes),
                     "--pretrain.method", method, "--probe.flip", json.dumps(args.flip)]  # fmt: skip
        cfg = load(args.config, overrides)
        accelerator = make_accelerator(cfg)
        splits = load_splits(cfg, accelerator)
        feats = _Features(cfg, splits, path or None, accelerator)
        for regime in args.regimes:
            labelled, _ = subsets(cfg.replace(finetune={"regime": regime}), splits)
            x, y = feats.labelled(labelled)
            test_x, test_y = feats.test, feats.test_y
            for how in args.normalize:
                start = time.perf_counter()
                p = cfg.probe
                r = linear_probe(
                    x, y, test_x, test_y, num_classes=splits.num_classes, epochs=p.epochs,
                    batch_size=p.batch_size, lr=p.lr, dropout=p.dropout, seed=int(seed),
                    val=feats.validation(), normalize=how, flipped_x=feats.flipped(labelled),
                )  # fmt: skip
                row = {"method": method, "seed": int(seed), "regime": regime, "normalize": how,
                       "flip": args.flip, "val_top1": r["val"]["top1"], "test_top1": r["test"]["top1"],
                       "best_epoch": r["best_epoch"], "final_loss": r["history"][-1]["loss"],
                       "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
                rows.append(row)
                print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps({"config": args.config, "rows": rows}, indent=1))
    print("\n| method | seed | regime | normalize | val top-1 | test top-1 | best epoch | final loss |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['regime']:g} % | {r['normalize']} | {r['val_top1']:.2f} | "
              f"{r['test_top1']:.2f} | {r['best_epoch']} | {r['final_loss']:.3g} |")  # fmt: skip


if __name__ == "__main__":
    main()
