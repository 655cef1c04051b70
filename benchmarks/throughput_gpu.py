"""Hebbian pre-training throughput on a GPU, next to an SGD training step of the same network.

Synthetic images already on the device (so the loader is not measured), for hebb_alexnet_6l at
32 px and hebb_alexnet_10l at 210 px, over precisions (fp32, tf32, bf16 autocast), eager and
compiled, channels-last. Each step is timed with CUDA events after warm-up; the median over
repeats is reported with images/s and the projected time of an epoch (CIFAR-10: 50,000 images;
ImageNet: 1,281,167 images).

    python benchmarks/throughput_gpu.py                       # every configuration, on cuda
    python benchmarks/throughput_gpu.py --device cpu --models hebb_alexnet_6l --batch 8 \\
        --precisions fp32 --modes eager --steps 2 --warmup 1  # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import time

import timm
import torch
from torch import nn

import hebbopt

EPOCH_IMAGES = {"hebb_alexnet_6l": 50_000, "hebb_alexnet_10l": 1_281_167}
SIZES = {"hebb_alexnet_6l": 32, "hebb_alexnet_10l": 210}


def precision_context(precision: str, device: torch.device):
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_step(kind: str, model: nn.Module, x: torch.Tensor, precision: str, compile: bool):
    device = x.device
    if kind == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        y = torch.randint(0, model.num_classes, (len(x),), device=device)
        forward = torch.compile(model) if compile else model

        def step():
            with precision_context(precision, device):
                loss = nn.functional.cross_entropy(forward(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step
    cls = hebbopt.HPCAHebb if kind == "hpca" else hebbopt.SoftWTAHebb
    opt = cls(model, lr=1e-4, compile=compile)

    def step():
        with torch.no_grad(), precision_context(precision, device):
            model(x)
        opt.step()

    return step


def time_step(step, device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=list(EPOCH_IMAGES), choices=list(EPOCH_IMAGES))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument(
        "--kinds", nargs="+", default=["sgd", "swta", "hpca"], choices=["sgd", "swta", "hpca"]
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--out", default=None, help="JSON path (default benchmarks/results/throughput_<device>.json)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    rows = []
    for model_name in args.models:
        size = SIZES[model_name]
        for precision in args.precisions:
            for mode in args.modes:
                for kind in args.kinds:
                    torch.manual_seed(0)
                    model = timm.create_model(model_name, num_classes=10 if size == 32 else 1000)
                    model = model.to(device, memory_format=torch.channels_last).train()
                    x = torch.randn(args.batch, 3, size, size, device=device).contiguous(
                        memory_format=torch.channels_last
                    )
                    step = make_step(kind, model, x, precision, mode == "compiled")
                    seconds = time_step(step, device, args.warmup, args.steps)
                    rows.append(
                        {"model": model_name, "precision": precision, "mode": mode, "kind": kind,
                         "batch": args.batch, "step_s": seconds, "images_per_s": args.batch / seconds,
                         "epoch_s": EPOCH_IMAGES[model_name] / (args.batch / seconds)}
                    )  # fmt: skip
                    print(f"{model_name} {precision} {mode} {kind}: {seconds * 1e3:.2f} ms", flush=True)
    print(f"\n{name}, batch {args.batch}, channels-last, torch {torch.__version__}\n")
    print("| model | precision | mode | step | ms/step | images/s | × SGD step | epoch |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        sgd = next(
            (
                s
                for s in rows
                if s["kind"] == "sgd" and all(s[k] == r[k] for k in ("model", "precision", "mode"))
            ),
            None,
        )
        ratio = f"{r['step_s'] / sgd['step_s']:.2f}" if sgd else "–"
        print(
            f"| {r['model']} | {r['precision']} | {r['mode']} | {r['kind']} | {r['step_s'] * 1e3:.2f} | "
            f"{r['images_per_s']:.0f} | {ratio} | {r['epoch_s']:.1f} s |"
        )
    out = pathlib.Path(
        args.out or pathlib.Path(__file__).parent / "results" / f"throughput_{device.type}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": rows}, indent=2))
    os.replace(tmp, out)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
