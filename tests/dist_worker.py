"""Worker processes of the distributed tests (imported by name in spawned children)."""

from __future__ import annotations

import datetime
import pathlib

import torch
import torch.distributed as dist
from torch import nn

import hebbopt

STEPS, BATCH = 3, 16


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 40), nn.ReLU(), nn.Linear(40, 3),
    )  # fmt: skip


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(BATCH, 3, 10, 10, generator=g) for _ in range(STEPS)]


def optimizer(rule: str, layers) -> hebbopt.HebbianOptimizer:
    return hebbopt.HebbianOptimizer(layers, rule, lr=0.5)


def train(net: nn.Module, opt: hebbopt.HebbianOptimizer, rank: int = 0, world: int = 1) -> None:
    for x in batches():
        with torch.no_grad():
            net(x.chunk(world)[rank])
        opt.step()


def worker(rank: int, world: int, init_file: str, rules: list[str], out: str, mismatch: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        for rule in rules:
            net = model()
            layers = hebbopt.hebbian_layers(net, exclude=["0"] if mismatch and rank == 1 else ())
            opt = optimizer(rule, layers)
            try:
                train(net, opt, rank, world)
            except ValueError as e:
                pathlib.Path(out, f"error{rank}.txt").write_text(str(e))
                return
            # Every rank's rule state (e.g. BCM's θ): computed from the all-reduced sums, the same.
            states = [s.get("rule_state", {}) for s in opt.state_dict()["state"].values()]
            torch.save(states, pathlib.Path(out, f"rule-state-{rule}-{rank}.pt"))
            if rank == 0:
                torch.save(net.state_dict(), pathlib.Path(out, f"weights-{rule}.pt"))
    finally:
        dist.destroy_process_group()
