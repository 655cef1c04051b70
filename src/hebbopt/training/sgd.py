"""Fine-tuning's optimizers and learning-rate schedules (the paper's SGD and step schedule, AdamW,
cosine), resumable; the VAE uses the paper's."""

from __future__ import annotations

import math

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


def cosine(epochs: int):
    """Cosine decay to 0 over ``epochs``, as a ``LambdaLR`` factor: f(e) = (1 + cos(π e / E)) / 2.

    Args:
        epochs: E, the epochs of the run.

    Returns:
        f, taking the epoch e (from 0) and giving the factor of the learning rate.

    Examples:
        >>> f = cosine(4)
        >>> [round(f(e), 3) for e in range(4)]
        [1.0, 0.854, 0.5, 0.146]
    """
    return lambda epoch: 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs)))


def sgd_run(model: nn.Module, cfg: Config, accelerator: Accelerator, run: Run, *, resume: bool, **sgd):
    """The paper's SGD (``sgd`` keyword arguments) with its step schedule, prepared by ``accelerator``
    and restored from ``run``'s checkpoint when resuming: what the VAE uses.

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
    return _prepared(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule), accelerator, run, resume)


def finetune_run(
    model: nn.Module, cfg: Config, accelerator: Accelerator, run: Run, *, resume: bool, lr: float, epochs: int
):
    """Fine-tuning's optimizer and schedule as section ``finetune`` sets them, prepared and restored
    as :func:`sgd_run` does.

    ``finetune.optimizer``: ``sgd`` (``momentum``, ``nesterov``, ``weight_decay``) or ``adamw``
    (``weight_decay``); ``finetune.schedule``: ``step`` (:func:`step_lr`) or ``cosine``
    (:func:`cosine` over ``epochs``).

    Args:
        model: the network, on the accelerator's device.
        cfg: the configuration.
        accelerator: prepares the model and optimizer.
        run: the run folder whose ``checkpoint.pt`` is restored.
        resume: restore the checkpoint if there is one.
        lr: the learning rate (``finetune.lr``, or ``finetune.lpft_lr`` for LP-FT's second phase).
        epochs: the epochs of the schedule.

    Returns:
        As :func:`sgd_run`.
    """
    f = cfg.finetune
    params = [p for p in model.parameters() if p.requires_grad]
    if f.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=f.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=lr, momentum=f.momentum, nesterov=f.nesterov, weight_decay=f.weight_decay
        )
    schedule = cosine(epochs) if f.schedule == "cosine" else step_lr(f.lr_constant_epochs, f.lr_halve_every)
    return _prepared(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule), accelerator, run, resume)


def _prepared(model, opt, sched, accelerator: Accelerator, run: Run, resume: bool):
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
