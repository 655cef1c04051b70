"""Run by ``torchrun --nproc_per_node 2`` in the tests: Hebbian steps under accelerate (DDP model,
AcceleratedOptimizer, gradient accumulation). Rank 0 writes the final weights to argv[2]."""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from dist_worker import batches, model, optimizer

ACCUMULATION = 4


def main(rule: str, out: str) -> None:
    acc = Accelerator(cpu=True, gradient_accumulation_steps=ACCUMULATION)
    net = model()
    opt = optimizer(rule, net)
    net, opt = acc.prepare(net, opt)
    assert isinstance(net, torch.nn.parallel.DistributedDataParallel), type(net)
    for x in batches():  # each global batch: ranks × micro-batches
        for micro in x.chunk(acc.num_processes * ACCUMULATION)[acc.process_index :: acc.num_processes]:
            with acc.accumulate(net), torch.no_grad():
                net(micro)
                opt.step()
    if acc.is_main_process:
        torch.save(acc.unwrap_model(net).state_dict(), out)
    acc.wait_for_everyone()
    acc.end_training()  # destroys the process group: gloo threads left running can abort a rank at exit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
