"""One Hebbian epoch of the committed SoftHebb config on the CPU: hebbopt against SoftHebb's own loop.

The recipe's pre-training (``recipes/configs/cifar10_softhebb_flip.yaml``: ``softhebb_3l``, the
SoftHebb rule with the paper's per-layer lr and temperature, all layers together) on real CIFAR-10
from ``$HEBBOPT_DATA`` (default ``../shared/datasets``), at batch 10 (the recipe's) and 64, in
fp32, under bf16 autocast (statistics in float32, the default) and with bf16 statistics as well
(``pretrain.statistics_dtype: bfloat16``). Beside it, in the same process and on the same batches,
SoftHebb's own formulation (its ``demo.py``, re-implemented as ``benchmarks/step_cpu.py`` does): per layer, in
the forward, ``ỹ·x`` as a convolution of the batch-transposed input with the batch-transposed
``ỹ``, then ``D / max|D|`` with per-neuron rates ``lr·(|‖w_n‖ − 1| + 1e-10)^0.5``, one Python
update per layer. Both loops get the same model (same seed) and the same batches from
:class:`hebbopt.training.batches.Batches`; the batches alternate in chunks between the two loops
so that the drift of a shared machine falls on both. Images/s counts the forward, the update and
the batch's data handling.

    python benchmarks/epoch_cpu.py                      # whole epoch (45,000 images) per cell
    python benchmarks/epoch_cpu.py --images 3000        # the first 3,000 images of each cell
    python benchmarks/epoch_cpu.py --flush-denormal     # subnormal floats flushed to zero in both loops

Writes ``benchmarks/results/epoch_cpu.json``: one record per (dtype, batch) with ``images_per_s``,
``reference_images_per_s`` and ``ratio``. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import sys
import time

import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState

import hebbopt
from hebbopt.capture import conv_geometry
from hebbopt.models import layer_hyper
from hebbopt.training.batches import Batches
from hebbopt.training.config import make_parser, parse_args
from hebbopt.training.models import build_model
from hebbopt.training.pretrain import hebbian_forward, hebbian_optimizer
from hebbopt.training.setup import load_splits, make_accelerator

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes/configs/cifar10_softhebb_flip.yaml"
WARMUP = 3  # batches, untimed


def softhebb_demo_loop(model: torch.nn.Module, layers: dict, cfg) -> callable:
    """SoftHebb's own update (its demo.py): ``ỹ·x`` by a convolution inside each layer's forward,
    then ``W += lr·(|‖w_n‖ − 1| + 1e-10)^0.5 · D / max|D|`` per layer.

    Returns:
        ``step(x)``: one forward pass of the batch and the update of every layer.
    """
    hyper = layer_hyper(cfg.model.name, "softhebb")
    deltas: dict[str, torch.Tensor] = {}

    def hook(mod, args, out, name):
        x, geometry = conv_geometry(mod, args[0])
        x = F.pad(x, [geometry.padding[1]] * 2 + [geometry.padding[0]] * 2)
        u = out if mod.bias is None else out - mod.bias.view(1, -1, 1, 1)
        y = torch.softmax(u / hyper[name]["temperature"], dim=1)
        win = u.argmax(dim=1, keepdim=True)
        yt = (-y).scatter_(1, win, y.gather(1, win))  # the winner Hebbian, the others anti-Hebbian
        yx = F.conv2d(x.transpose(0, 1), yt.transpose(0, 1), stride=mod.dilation, dilation=mod.stride)
        yu = (yt * u).sum((0, 2, 3))
        d = yx.transpose(0, 1).to(mod.weight.dtype) - yu.view(-1, 1, 1, 1) * mod.weight
        deltas[name] = d.div_(d.abs().amax() + 1e-30)

    for name, m in layers.items():
        m.register_forward_hook(lambda mod, args, out, name=name: hook(mod, args, out, name))

    def step():
        for name, m in layers.items():
            w = m.weight
            rate = hyper[name]["lr"] * ((w.flatten(1).norm(dim=1) - 1).abs() + 1e-10) ** 0.5
            w.add_(rate.view(-1, 1, 1, 1) * deltas[name])
        deltas.clear()

    return step


def cell(dtype: str, batch: int, images: int, chunk: int) -> dict:
    """Time hebbopt and SoftHebb's loop on the first ``images`` images of one epoch."""
    precision = {"fp32": "no", "bf16": "bf16", "bf16-stats": "bf16"}[dtype]
    statistics = "bfloat16" if dtype == "bf16-stats" else "float32"
    _, cfg = parse_args(
        make_parser(),
        ["--config", str(CONFIG), "--pretrain.batch_size", str(batch), "--run.mixed_precision", precision,
         "--pretrain.statistics_dtype", statistics, "--run.progress", "false"],
    )  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)  # a new precision per cell
    accelerator = make_accelerator(cfg)
    splits = load_splits(cfg, accelerator)
    ours, theirs = (build_model(cfg, splits, seed=cfg.run.seed).train() for _ in range(2))
    opt = hebbian_optimizer(cfg, hebbopt.hebbian_layers(ours))
    forward = hebbian_forward(ours, hebbopt.hebbian_layers(ours))  # the recipe's Hebbian forward
    demo_step = softhebb_demo_loop(theirs, hebbopt.hebbian_layers(theirs), cfg)
    autocast = accelerator.autocast if precision == "bf16" else contextlib.nullcontext
    order = torch.arange(len(splits.train))[:images]
    batches = Batches(
        splits.train, order, batch, accelerator, order_seed=0, channels_last=cfg.model.channels_last
    )
    t_ours = t_theirs = t_data = 0.0
    seen, pending = 0, []
    it = iter(batches)
    for x, _ in it:  # the first batches warm both loops up, untimed
        pending.append(x)
        if len(pending) == WARMUP:
            break
    for x in pending:
        with torch.no_grad(), autocast():
            forward(x)
        opt.step()
        with torch.no_grad(), autocast():
            theirs(x)
            demo_step()
    while True:
        start = time.perf_counter()
        pending = [x for _, (x, _) in zip(range(chunk), it, strict=False)]
        t_data += time.perf_counter() - start
        if not pending:
            break
        start = time.perf_counter()
        for x in pending:
            with torch.no_grad(), autocast():
                forward(x)
            opt.step()
        t_ours += time.perf_counter() - start
        start = time.perf_counter()
        for x in pending:
            with torch.no_grad(), autocast():
                theirs(x)
                demo_step()
        t_theirs += time.perf_counter() - start
        seen += sum(len(x) for x in pending)
    opt.close()
    if not seen:
        raise SystemExit(f"--images {images} leaves no timed batch of {batch} after {WARMUP} warm-up batches")
    ours_ips, theirs_ips = seen / (t_ours + t_data), seen / (t_theirs + t_data)
    return {
        "dtype": dtype.split("-")[0], "statistics_dtype": statistics, "batch": batch, "images": seen,
        "images_per_s": ours_ips, "reference_images_per_s": theirs_ips, "ratio": ours_ips / theirs_ips,
        "data_seconds": t_data,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=45_000, help="images per cell (default: the epoch)")
    ap.add_argument(
        "--dtypes",
        nargs="+",
        default=["fp32", "bf16", "bf16-stats"],
        choices=["fp32", "bf16", "bf16-stats"],
        help="bf16: forward passes under bf16 autocast; bf16-stats: and pretrain.statistics_dtype bfloat16",
    )
    ap.add_argument("--batches", nargs="+", type=int, default=[10, 64])
    ap.add_argument("--chunk", type=int, default=20, help="batches per turn of each loop")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--flush-denormal",
        action="store_true",
        help="torch.set_flush_denormal(True) for both loops: SoftHebb's loop as written computes on "
        "subnormal softmax outputs, which the CPU handles 10-100x slower (hebbopt sets them to 0)",
    )
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks/results/epoch_cpu.json")
    args = ap.parse_args()
    os.environ.setdefault("HEBBOPT_DATA", str(ROOT.parent / "shared/datasets"))
    torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        raise SystemExit("--flush-denormal: this CPU has no flush-to-zero mode (torch.set_flush_denormal)")
    records = []
    print("| dtype | batch | images | hebbopt (img/s) | SoftHebb's loop (img/s) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for dtype in args.dtypes:
        for batch in args.batches:
            r = cell(dtype, batch, args.images, args.chunk)
            records.append(r)
            print(
                f"| {dtype} | {batch} | {r['images']} | {r['images_per_s']:.1f} | "
                f"{r['reference_images_per_s']:.1f} | {r['ratio']:.2f} |",
                flush=True,
            )
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "flush_denormal": args.flush_denormal,
        "machine": platform.processor() or platform.machine(),
        "command": " ".join(["python", "benchmarks/epoch_cpu.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([{**r, **meta} for r in records], indent=1) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
