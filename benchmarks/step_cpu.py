"""One Hebbian step on the CPU, for every rule of ``hebbopt.rules.RULES``: hebbopt vs the
formulations before it, as a ratio to an SGD step of the same net.

Each rule runs on its paper's network (:data:`NETS`): the FastHebb 6-layer net for soft-WTA, HPCA
and Oja; ``softhebb_3l`` for SoftHebb and Krotov–Hopfield. A step is one forward pass of a batch
plus the weight update of every hidden layer:

* ``reference``: the rule's literal per-sample form (``RULES[rule].reference``, in the rule's file;
  slow on purpose).
* ``unfold``: the FastHebb formulation (eq. 6, 8): unfold patches into X, then matmuls
  (``benchmarks/unfold.py``).
* ``conv-transpose``: SoftHebb's own formulation (its demo.py): ỹ·x as a convolution of the
  batch-transposed input with the batch-transposed ỹ, inside the forward, then the normalised
  update with per-neuron rates.
* ``hebbopt``: sufficient statistics from forward hooks, convolution weight-gradients instead of
  unfolded patches, the O(B·N·S) reconstruction for the 4096-unit layer; eager and compiled.
* ``sgd``: a backprop step of the same net for scale (cross-entropy, momentum 0.9).

Times are medians over repeats after warm-up; each method runs in a worker process of its own
(one at a time), interleaved, one step each per round, and "× SGD step" is the median over rounds of (method
step / SGD step of the same round), which cancels most of the drift of a shared machine. Peak
memory is measured in a fresh process per method: peak RSS during one step minus RSS before it
(Linux ``VmHWM``, reset via clear_refs).

    python benchmarks/step_cpu.py            # table on stdout, JSON in benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys
import time

import timm
import torch
import torch.nn.functional as F
from torch import nn
from unfold import hpca_update_unfold, swta_update_unfold

import hebbopt
from hebbopt.rules import RULES

BATCH, SIZE, THREADS = 64, 32, 2
NETS = {"softhebb": "softhebb_3l", "krotov": "softhebb_3l"}
"""The network of each rule's paper; the others run on the FastHebb 6-layer net ("paper")."""
EXTRA = {"swta": ["unfold"], "hpca": ["unfold"], "softhebb": ["conv-transpose"]}
"""Formulations besides the per-sample reference and hebbopt, by rule."""
LR = {"softhebb": 0.01, "krotov": 0.01}


def _methods() -> dict[str, tuple]:
    # name: (net, rule, implementation, warm-up steps, timed steps apart; None = interleaved rounds)
    methods = {}
    for net in ("paper", *sorted(set(NETS.values()))):
        methods[f"{net}: forward only"] = (net, None, "forward", 2, None)
        methods[f"{net}: sgd step"] = (net, None, "sgd", 2, None)
    for rule in RULES:
        net = NETS.get(rule, "paper")
        methods[f"{net}: {rule} reference"] = (net, rule, "reference", 0, 1)
        for impl in EXTRA.get(rule, []):
            methods[f"{net}: {rule} {impl}"] = (net, rule, impl, 1, None)
        methods[f"{net}: {rule} hebbopt eager"] = (net, rule, "eager", 2, None)
        methods[f"{net}: {rule} hebbopt compiled"] = (net, rule, "compiled", 2, None)
    return methods


METHODS = _methods()


def paper_net(num_classes: int = 10) -> nn.Sequential:
    """The FastHebb 6-layer net for 32×32 inputs (conv5 on the 3×3 map written as a Linear)."""

    def block(conv, pool, bn):
        return [conv, nn.ReLU(), *([nn.MaxPool2d(2)] if pool else []), bn]

    return nn.Sequential(
        *block(nn.Conv2d(3, 96, 5, bias=False), True, nn.BatchNorm2d(96)),
        *block(nn.Conv2d(96, 128, 3, bias=False), False, nn.BatchNorm2d(128)),
        *block(nn.Conv2d(128, 192, 3, bias=False), True, nn.BatchNorm2d(192)),
        *block(nn.Conv2d(192, 256, 3, bias=False), False, nn.BatchNorm2d(256)),
        nn.Flatten(),
        *block(nn.Linear(2304, 4096, bias=False), False, nn.BatchNorm1d(4096)),
        nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )


def conv_transpose_step(net: nn.Module, x: torch.Tensor, lr: float = 0.01):
    """SoftHebb's own formulation (its demo.py, rewritten): per layer, in the forward, ỹ·x by a
    convolution of the batch-transposed input with the batch-transposed ỹ; then D / max|D| scaled
    by per-neuron rates (there a scheduler), W += η_n D."""
    layers = hebbopt.hebbian_layers(net)
    deltas: dict[str, torch.Tensor] = {}

    def hook(mod, args, out, name):
        xin, geometry = hebbopt.capture.conv_geometry(mod, args[0])
        xin = F.pad(xin, [geometry.padding[1]] * 2 + [geometry.padding[0]] * 2)
        u = out
        y = torch.softmax(u, dim=1)
        win = u.argmax(dim=1, keepdim=True)
        yt = (-y).scatter_(1, win, y.gather(1, win))
        yx = F.conv2d(xin.transpose(0, 1), yt.transpose(0, 1), stride=mod.dilation, dilation=mod.stride)
        yu = (yt * u).sum((0, 2, 3))
        d = yx.transpose(0, 1) - yu.view(-1, 1, 1, 1) * mod.weight
        deltas[name] = d.div_(d.abs().amax() + 1e-30)

    for name, m in layers.items():
        m.register_forward_hook(lambda mod, args, out, name=name: hook(mod, args, out, name))

    def step():
        with torch.no_grad():
            net(x)
            for name, m in layers.items():
                w = m.weight
                rate = lr * ((w.flatten(1).norm(dim=1) - 1).abs() + 1e-10) ** 0.5
                w.add_(rate.view(-1, 1, 1, 1) * deltas[name])
        deltas.clear()

    return step


def make_step(rule: str | None, impl: str, net: nn.Module, x: torch.Tensor, y: torch.Tensor):
    if impl == "forward":

        def step():
            with torch.no_grad():
                net(x)

        return step
    if impl == "sgd":
        sgd = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            sgd.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
            sgd.step()

        return step
    if impl == "conv-transpose":
        return conv_transpose_step(net, x)
    if impl in ("eager", "compiled"):
        opt = hebbopt.HebbianOptimizer(net, rule, lr=LR.get(rule, 1e-3), compile=impl == "compiled")

        def step():
            with torch.no_grad():
                net(x)
            opt.step()

        return step
    layers = hebbopt.hebbian_layers(net)
    unfold = {("swta", "unfold"): swta_update_unfold, ("hpca", "unfold"): hpca_update_unfold}.get(
        (rule, impl)
    )
    hyper = RULES[rule].defaults()
    # The per-sample reference, from a new layer's state each step (only the time is measured).
    fn = unfold or (
        lambda m, x, **h: RULES[rule].reference_step(m, x, RULES[rule].initial_state(m.weight), **h)[0]
    )
    inputs: dict[str, torch.Tensor] = {}
    for name, m in layers.items():
        m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))

    def step():
        with torch.no_grad():
            net(x)
            deltas = {name: fn(m, inputs[name], **hyper) for name, m in layers.items()}
            for name, m in layers.items():
                m.weight.add_(deltas[name], alpha=1e-3)
        inputs.clear()

    return step


def setup(name: str, channels_last: bool = True):
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net_name, rule, impl, warmup, repeats = METHODS[name]
    net = paper_net() if net_name == "paper" else timm.create_model(net_name, num_classes=10)
    net = net.to(memory_format=fmt)
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,))
    return make_step(rule, impl, net, x, y), warmup, repeats


def _worker(name: str, conn) -> None:
    # One method in a process of its own: its allocator state is its own, as in a training run.
    step, warmup, repeats = setup(name)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    conn.send((time.perf_counter() - t0, repeats))
    while conn.recv():
        t = time.perf_counter()
        step()
        conn.send(time.perf_counter() - t)


def time_methods(names: list[str], rounds: int) -> dict[str, dict]:
    """Median step time of each method, each in a worker process of its own (the allocator state
    one method leaves behind changes another's step times: the paper net's SWTA step measured
    0.69–0.82 × SGD depending on which other methods shared its process). Only one worker runs
    at a time. Interleaved methods run one step each per round, so that the drift of a shared
    machine hits them alike; the others (the slow references) run apart."""
    ctx = multiprocessing.get_context("spawn")
    workers, rows, repeats = {}, {}, {}
    for name in names:
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(name, theirs), daemon=True)
        proc.start()
        warmup_s, repeats[name] = ours.recv()
        workers[name] = (proc, ours)
        rows[name] = {"warmup_s": warmup_s, "times_s": []}

    def timed(name: str) -> None:
        workers[name][1].send(True)
        try:
            rows[name]["times_s"].append(workers[name][1].recv())
        except EOFError:
            raise RuntimeError(f"the worker of {name!r} failed (its traceback is above)") from None

    fast = [n for n in names if repeats[n] is None]
    for _ in range(rounds):
        for name in fast:
            timed(name)
    for name in names:
        for _ in range(repeats[name] or 0):
            timed(name)
        rows[name]["median_s"] = statistics.median(rows[name]["times_s"])
        rows[name]["repeats"] = len(rows[name]["times_s"])
        rows[name]["min_s"] = min(rows[name]["times_s"])
    for proc, conn in workers.values():
        conn.send(False)
        proc.join()
    return rows


def _status_kb(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def peak_memory_mb(name: str) -> float:
    """Peak RSS growth during the first step (fresh process, so nothing is cached)."""
    step, _, _ = setup(name)
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    step()
    return (_status_kb("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "step_cpu.json"))
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=40, help="interleaved timed steps per method")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-method memory runs")
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps({"peak_mb": peak_memory_mb(args.memory_of)}))
        return

    rows = time_methods(args.methods, args.rounds)
    for name in args.methods:
        if not args.no_memory and not name.endswith("compiled"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-of", name], capture_output=True, text=True, check=True
            )
            rows[name]["peak_mb"] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]

    print(f"\nOne step, batch {BATCH}, {SIZE}×{SIZE}, fp32, channels-last, {THREADS} CPU threads", end="")
    print(f" (torch {torch.__version__}, {args.rounds} interleaved rounds)\n")
    print("| method | step (ms) | × SGD step | speed-up vs per-sample | peak extra memory (MB) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        net_name, rule = METHODS[name][0], METHODS[name][1]
        sgd = rows.get(f"{net_name}: sgd step")
        if sgd and len(r["times_s"]) == len(sgd["times_s"]):
            # Interleaved: the ratio of each round's pair of steps, then the median over rounds.
            r["x_sgd"] = statistics.median(a / b for a, b in zip(r["times_s"], sgd["times_s"], strict=True))
        elif sgd:
            r["x_sgd"] = r["median_s"] / sgd["median_s"]
        ref = rows.get(f"{net_name}: {rule} reference", {}).get("median_s")
        ratio = f"{r['x_sgd']:.2f}" if "x_sgd" in r else "–"
        speed = f"{ref / r['median_s']:.0f}×" if ref and rule else "–"
        mem = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "–"
        print(f"| {name} | {r['median_s'] * 1e3:.1f} | {ratio} | {speed} | {mem} |")
    result = {
        "device": f"CPU ({platform.processor() or platform.machine()}), {THREADS} threads",
        "torch": torch.__version__,
        "batch": BATCH,
        "image_size": SIZE,
        "methods": rows,
        "command": shlex.join(["python", "benchmarks/step_cpu.py", *sys.argv[1:]]),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
