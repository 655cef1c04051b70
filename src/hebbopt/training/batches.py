"""Batches on the accelerator's device, each process its share, and evaluation over them."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Subset

from hebbopt.data import TensorImages
from hebbopt.training.config import Config


def shard(indices: torch.Tensor, accelerator: Accelerator, *, even: bool) -> torch.Tensor:
    """This process's share of ``indices``: every ``num_processes``-th, from ``process_index`` on.

    Args:
        indices: the indices of all processes, in order.
        accelerator: gives ``num_processes`` and ``process_index``.
        even: first drop the last ``len(indices) % num_processes`` indices, so that every process
            gets as many (needed when every batch ends in a collective, as Hebbian steps do).

    Returns:
        The indices of this process.

    Examples:
        >>> from types import SimpleNamespace
        >>> second_of_two = SimpleNamespace(num_processes=2, process_index=1)
        >>> shard(torch.arange(7), second_of_two, even=True).tolist()
        [1, 3, 5]
    """
    world = accelerator.num_processes
    if even:
        indices = indices[: len(indices) // world * world]
    return indices[accelerator.process_index :: world]


class Batches:
    """Batches of ``dataset[indices]`` on the accelerator's device, in a seeded order.

    Tensor datasets are gathered a batch at a time (no per-image Python work); streamed folders
    go through a :class:`~torch.utils.data.DataLoader` with ``workers`` and pinned memory. A
    final batch of one image is dropped (BatchNorm cannot train on it).

    Args:
        dataset: a :class:`~hebbopt.data.datasets.TensorImages`, or any dataset of ``(x, y)`` items.
        indices: the items to go through (of all processes).
        batch_size: images per batch, per process.
        accelerator: the device, and this process's share (see :func:`shard`).
        order_seed: shuffle ``indices`` with this seed first; None keeps their order.
        even: every process gets as many indices (see :func:`shard`).
        channels_last: images in channels-last memory format.
        workers: DataLoader worker processes (streamed datasets only).
        min_batch: a smaller final batch is dropped.
    """

    def __init__(
        self,
        dataset,
        indices: torch.Tensor,
        batch_size: int,
        accelerator: Accelerator,
        *,
        order_seed: int | None = None,
        even: bool = True,
        channels_last: bool = True,
        workers: int = 0,
        min_batch: int = 2,
    ) -> None:
        if order_seed is not None:
            indices = indices[
                torch.randperm(len(indices), generator=torch.Generator().manual_seed(order_seed))
            ]
        self.indices = shard(indices, accelerator, even=even)
        self.dataset, self.batch_size, self.accelerator = dataset, batch_size, accelerator
        self.channels_last, self.workers = channels_last, workers
        n = len(self.indices)
        full, rest = divmod(n, batch_size)
        self.length = full + (1 if rest >= min_batch else 0)

    def __len__(self) -> int:
        return self.length

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.accelerator.device
        x = x.to(device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(self.dataset, TensorImages):
            for i in range(self.length):
                yield self._to_device(
                    *self.dataset.batch(self.indices[i * self.batch_size : (i + 1) * self.batch_size])
                )
            return
        loader = DataLoader(
            Subset(self.dataset, self.indices.tolist()),
            batch_size=self.batch_size,
            num_workers=self.workers,
            pin_memory=self.accelerator.device.type == "cuda",
            persistent_workers=False,
        )
        for i, (x, y) in enumerate(loader):
            if i >= self.length:
                break
            yield self._to_device(x, y)


def eval_batch_size(cfg: Config) -> int:
    """Images per process and batch when scoring: 4 × ``finetune.batch_size``, at most 256.

    A forward pass without autograd keeps far fewer activations than fine-tuning's forward and
    backward at its own batch size, so what fine-tuning fits in memory scores in batches four times
    as large (256 at the default 64; a 210 px network fine-tuned at 16 per process on a CPU scores
    in 64s, where 256 took 8 GB a process).

    Args:
        cfg: the configuration (``finetune.batch_size``).

    Returns:
        The batch size.
    """
    return min(256, 4 * cfg.finetune.batch_size)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset, indices: torch.Tensor | None, accelerator: Accelerator, cfg: Config
) -> dict:
    """Top-1 and top-5 accuracy (%) of ``model`` on ``dataset[indices]``, counted over all processes.

    The model is in eval mode meanwhile (then back to its mode), under the accelerator's autocast,
    in batches of :func:`eval_batch_size` per process.

    Args:
        model: the classifier.
        dataset: the images, as :class:`Batches` takes them.
        indices: the images to count; None: all of ``dataset``.
        accelerator: the device and processes; every process must call this.
        cfg: the configuration (``model.channels_last``, ``data.workers``).

    Returns:
        ``{"top1": %, "top5": %, "images": n}`` over all processes (top-5 is over the classes
        there are when fewer than 5).
    """
    if indices is None:
        indices = torch.arange(len(dataset))
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    batches = Batches(
        dataset, indices, eval_batch_size(cfg), accelerator, even=False,
        channels_last=cfg.model.channels_last, workers=cfg.data.workers, min_batch=1,
    )  # fmt: skip
    for x, y in batches:
        with accelerator.autocast():
            logits = model(x)
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        counts += torch.stack(
            [hits[:, 0].sum(), hits.any(1).sum(), torch.tensor(len(y), device=y.device)]
        ).double()
    counts = accelerator.reduce(counts, reduction="sum")
    model.train(was_training)
    n = max(1.0, counts[2].item())
    return {
        "top1": 100 * counts[0].item() / n,
        "top5": 100 * counts[1].item() / n,
        "images": int(counts[2].item()),
    }
