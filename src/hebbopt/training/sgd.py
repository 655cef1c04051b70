"""The paper's SGD with its step learning-rate schedule, resumable: what fine-tuning and the VAE share."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import nn

from hebbopt.training.checkpoints import load_checkpoint
from hebbopt.training.config import Config
from hebbopt.training.run_folder import Run


def step_lr(constant_epochs: int, halve_every: int):
    """The paper's learning-rate schedule, as a ``LambdaLR`` factor of the epoch.

    Constant for c = ``constant_epochs`` epochs, then halved every h = ``halve_every`` epochs:

        f(e) = 1 for e < c,    f(e) = 0.5^(⌊(e − c) / h⌋ + 1) for e ≥ c

    Args:
        constant_epochs: c, the epochs at the full learning rate (``finetune.lr_constant_epochs``).
        halve_every: h, the epochs between halvings (``finetune.lr_halve_every``).

    Returns:
        f, taking the epoch e (from 0) and giving the factor of the learning rate.

    Examples:
        >>> f = step_lr(10, 2)
        >>> [f(e) for e in (0, 9, 10, 11, 12, 14)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    """

    def factor(epoch: int) -> float:
        return 1.0 if epoch < constant_epochs else 0.5 ** ((epoch - constant_epochs) // halve_every + 1)

    return factor


def sgd_run(model: nn.Module, cfg: Config, accelerator: Accelerator, run: Run, *, resume: bool, **sgd):
    """The paper's SGD (``sgd`` keyword arguments) with its step schedule, prepared by ``accelerator``
    and restored from ``run``'s checkpoint when resuming: what fine-tuning and the VAE share.

    Args:
        model: the network, on the accelerator's device.
        cfg: supplies the schedule (``finetune.lr_constant_epochs``, ``finetune.lr_halve_every``).
        accelerator: prepares the model and optimizer (DDP across processes).
        run: the run folder whose ``checkpoint.pt`` is restored.
        resume: restore the checkpoint if there is one.

    Returns:
        ``(prepared model, prepared optimizer, scheduler, unwrapped model, checkpoint or None)``.
    """
    opt = torch.optim.SGD(model.parameters(), **sgd)
    schedule = step_lr(cfg.finetune.lr_constant_epochs, cfg.finetune.lr_halve_every)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    prepared, opt = accelerator.prepare(model, opt)
    plain = accelerator.unwrap_model(prepared)
    state = None
    if resume and run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        plain.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        run.log(f"resumed from {run.checkpoint}: epoch {state['epoch']}")
    return prepared, opt, sched, plain, state
