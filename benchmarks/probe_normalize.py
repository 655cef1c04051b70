"""Linear-probe feature scaling, chosen on the validation split: ``none`` (SoftHebb's probe),
``standardize`` and ``l2`` (:func:`hebbopt.training.probe.feature_scaler`) on the frozen features
of finished pre-training runs, at the sweep's regimes. Prints a table and writes JSON.

    HEBBOPT_DATA=../shared/datasets python benchmarks/probe_normalize.py \
        --config recipes/configs/cifar10_softhebb.yaml \
        --backbone softhebb:0:runs/cifar10_softhebb/pretrain/softhebb-seed0/backbone.safetensors \
        --regimes 1 100 --out benchmarks/results/probe_normalize.json

``--backbone method:seed:path`` may repeat; ``none:<seed>:`` (no path) is the random start.
Test accuracies are recorded beside, but only the validation column may choose.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from hebbopt.training import load
from hebbopt.training.finetune import subsets
from hebbopt.training.probe import NORMALIZE, linear_probe
from hebbopt.training.semisup import _Features
from hebbopt.training.setup import load_splits, make_accelerator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--backbone", action="append", required=True, help="method:seed:path")
    ap.add_argument("--regimes", type=float, nargs="+", default=[100])
    ap.add_argument("--normalize", nargs="+", default=list(NORMALIZE), choices=NORMALIZE)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    rows = []
    for spec in args.backbone:
        method, seed, path = spec.split(":", 2)
        cfg = load(args.config, ["--run.seed", seed, "--sweep.regimes", json.dumps(args.regimes),
                                 "--pretrain.method", method])  # fmt: skip
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
                    val=feats.validation(), normalize=how,
                )  # fmt: skip
                row = {"method": method, "seed": int(seed), "regime": regime, "normalize": how,
                       "val_top1": r["val"]["top1"], "test_top1": r["test"]["top1"],
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
