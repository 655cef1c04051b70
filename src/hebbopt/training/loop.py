"""The epoch loop the trainers share (Hebbian pre-training, the VAE, fine-tuning), so that each
reads top to bottom with only its own step in it::

    for epoch in epochs(cfg, run, accelerator, splits.train, indices, batch_size, "finetune/order",
                        first=first_epoch, count=epochs, desc="finetune"):
        model.train()
        for step, (x, y) in epoch:  # the run's global step, and a batch
            ...
        entry = epoch.record(loss=...)  # epoch, seconds, images/s
        ...
        run.save(...)

Each epoch draws its batch order from its own named random stream
(``derive_seed(run.seed, f"{stream}/epoch{e}")``), so a run resumed at epoch ``e`` sees the same
batches as an uninterrupted one; the batches are spread over the processes
(:class:`~hebbopt.training.batches.Batches`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from accelerate import Accelerator

from hebbopt.data.seeds import derive_seed
from hebbopt.training.batches import Batches
from hebbopt.training.config import Config
from hebbopt.training.run_folder import Run


class Epoch:
    """One epoch's batches: iterate for ``(global step, batch)`` under a progress bar, timed.

    Args:
        index: the epoch, from 0.
        batches: its batches.
        base: the run's global step of its first batch.
        run: the run (its progress bar).
        desc: the progress bar's text.
        processes: the number of processes (images/s counts all of them).
    """

    def __init__(self, index: int, batches: Batches, base: int, run: Run, desc: str, processes: int) -> None:
        self.index, self.batches, self.base = index, batches, base
        self.run, self.desc, self.processes = run, desc, processes
        self.seconds, self.images = 0.0, 0

    def __iter__(self) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor]]]:
        start = time.perf_counter()
        for i, batch in enumerate(self.run.progress(self.batches, self.desc)):
            yield self.base + i, batch
            self.images += len(batch[0]) * self.processes
        self.seconds = time.perf_counter() - start

    @property
    def end(self) -> int:
        """The run's global step after this epoch."""
        return self.base + len(self.batches)

    def record(self, **fields) -> dict:
        """The epoch's entry of a run's history.

        Args:
            **fields: the trainer's own figures (loss, lr, validation, ...).

        Returns:
            ``{"epoch": e (from 1), "seconds": s, "images_per_s": ..., **fields}``.
        """
        return {"epoch": self.index + 1, "seconds": self.seconds,
                "images_per_s": self.images / max(self.seconds, 1e-9), **fields}  # fmt: skip


def epochs(
    cfg: Config,
    run: Run,
    accelerator: Accelerator,
    dataset,
    indices: torch.Tensor,
    batch_size: int,
    stream: str,
    *,
    first: int,
    count: int,
    desc: str,
    offset: int = 0,
) -> Iterator[Epoch]:
    """Epochs ``first`` … ``count - 1`` of a run, each with its seeded batch order.

    Args:
        cfg: the configuration (``run.seed``, ``model.channels_last``, ``data.workers``).
        run: the run.
        accelerator: the device and processes.
        dataset: the images, as :class:`~hebbopt.training.batches.Batches` takes them.
        indices: the images of an epoch.
        batch_size: per process.
        stream: the name of the batch order's random stream (epoch ``e`` draws from
            ``f"{stream}/epoch{e}"``).
        first: the first epoch to run (from 0; a resumed run's next).
        count: the number of epochs in the run.
        desc: the progress bar's text (``epoch e`` is added).
        offset: epochs run before these in the same run (a layerwise pre-training's earlier
            stages), for the global step.

    Returns:
        An iterator of the epochs, each an :class:`Epoch` (its batches made as it is reached).
    """
    for index in range(first, count):
        batches = Batches(
            dataset, indices, batch_size, accelerator,
            order_seed=derive_seed(cfg.run.seed, f"{stream}/epoch{index}"),
            channels_last=cfg.model.channels_last, workers=cfg.data.workers,
        )  # fmt: skip
        base = (offset + index) * len(batches)
        yield Epoch(index, batches, base, run, f"{desc} epoch {index + 1}", accelerator.num_processes)
