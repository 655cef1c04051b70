"""Supervised fine-tuning on the labelled subset, then top-1/top-5 on the test split.

The paper's defaults (FastHebb §4.3): 20 epochs, batch 64, SGD lr 1e-3, momentum 0.9 with
Nesterov, lr constant for 10 epochs then halved every 2 epochs, dropout 0.5, cross-entropy, weight
decay 5e-2 (CIFAR-10); end to end; the model kept is the epoch with the best validation accuracy
(early stopping) when ``data.val_size`` > 0, else the last epoch. Section ``finetune`` also offers
AdamW, a cosine schedule, random crops and flips and a scaled head (``head_norm``), and the second
phase of LP-FT (Kumar et al., ICLR 2022): every layer trained from a linear probe's head
(``head``), at ``finetune.lpft_lr`` for ``finetune.lpft_epochs``; that phase's starting point (the
probe's head on the frozen backbone) is scored on validation as its epoch 0, so the kept model is
never worse on validation than the probe. ``finetune.steps`` / ``lpft_steps`` give a budget of
optimizer steps instead of epochs (the same at every labelled share).
"""

from __future__ import annotations

import json
import math
import pathlib

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from hebbopt.data import ImageSplits, labelled_subset, validation_split
from hebbopt.data.seeds import derive_seed
from hebbopt.selection import classifier
from hebbopt.training.augment import crop_flip
from hebbopt.training.batches import Batches, evaluate
from hebbopt.training.checkpoints import file_input
from hebbopt.training.config import Config, ConfigError
from hebbopt.training.loop import epochs as epochs_of
from hebbopt.training.models import build_model
from hebbopt.training.run_folder import Run, check_finite
from hebbopt.training.setup import load_splits, make_accelerator
from hebbopt.training.sgd import finetune_run
from hebbopt.training.tracking import Tracker
from hebbopt.weights import load_weights, read_weights, save_weights


def subsets(cfg: Config, splits: ImageSplits) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled subset and the validation split of the training set.

    Args:
        cfg: the configuration: ``finetune.regime`` s, ``finetune.balanced``, ``data.val_size`` and
            ``run.seed``.
        splits: the dataset.

    Returns:
        ``(labelled, validation)``: sorted indices into ``splits.train``, disjoint; the validation
        split (:func:`~hebbopt.data.regimes.validation_split`, seed 0) is the same for every seed and
        regime, the labelled s % (:func:`~hebbopt.data.regimes.labelled_subset`) is drawn from the rest.
    """
    labels = splits.train_labels
    val = validation_split(labels, cfg.data.val_size)
    labelled = labelled_subset(
        labels, cfg.finetune.regime, cfg.run.seed, balanced=cfg.finetune.balanced, exclude=val
    )
    return labelled, val


def finetune(
    cfg: Config,
    *,
    backbone: str | pathlib.Path | None = None,
    method: str | None = None,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    splits: ImageSplits | None = None,
    head: tuple[torch.Tensor, torch.Tensor] | None = None,
    protocol: str = "finetune",
    extra: dict | None = None,
) -> dict:
    """Fine-tune ``cfg.model`` (from ``backbone`` weights, else a seeded random start) on the labelled
    ``cfg.finetune.regime`` % of the training set; evaluate on the test split.

    Writes ``config.yaml``, ``log.txt``, ``checkpoint.pt`` (every epoch), ``model.safetensors`` (the
    kept weights) and ``metrics.json`` to ``cfg.run.dir``. With ``run.log_with``, logs the training
    loss and lr every ``run.log_every`` steps, the epoch's loss, lr and validation accuracy, and
    the test accuracy (:class:`~hebbopt.training.tracking.Tracker`).

    Args:
        cfg: the configuration (``data``, ``model``, ``finetune``, ``run``).
        backbone: safetensors of a pre-trained model of the same architecture (its classifier is
            not loaded: the head starts from the seeded initialisation, as with no pre-training).
        method: label recorded in the metrics (default: the method in the ``metrics.json`` beside
            ``backbone`` as :func:`~hebbopt.training.pretrain.pretrain` writes it, ``"pretrained"``
            if there is none, ``"none"`` without a backbone).
        resume: continue the run in ``cfg.run.dir`` from its last checkpoint; a finished run
            returns its metrics at once.
        accelerator: the accelerator to use (the sweep shares one); default: a new one
            (:func:`~hebbopt.training.setup.make_accelerator`).
        splits: the dataset, already loaded (the sweep loads it once); default:
            :func:`~hebbopt.training.setup.load_splits`.
        head: ``(weight, bias)`` of the classifier to start from (a linear probe's, for LP-FT's
            second phase: ``finetune.lpft_lr``, ``finetune.lpft_epochs``); None: the seeded
            initialisation, ``finetune.lr``, ``finetune.epochs``.
        protocol: the label recorded in the metrics (``finetune`` or ``lpft``).
        extra: more entries for the metrics (LP-FT records its probe's there).

    Returns:
        The metrics: ``test`` (top1, top5 in %), ``val`` (of the kept epoch, with a validation
        split), ``labelled`` (images), ``best_epoch``, ``history``.

    Raises:
        ConfigError: the run folder holds another run (without ``resume``) or a different config,
            kind or backbone, ``backbone`` does not exist, or the model cannot be built.
        CorruptFileError: ``backbone`` or a file of the run folder is damaged.
        FloatingPointError: the training loss is not finite (the run is stopped, not finished).
    """
    inputs = {"backbone": None}
    if backbone is not None:  # checked before any data is read or folder made
        inputs["backbone"] = file_input(backbone, "--backbone")
        if pathlib.Path(backbone).suffix != ".safetensors":
            raise ConfigError(f"--backbone {backbone}: expected a .safetensors file")
        read_weights(backbone)  # readable, checksum verified
    accelerator = accelerator or make_accelerator(cfg)
    run = Run(cfg, accelerator, resume=resume, kind="finetune", inputs=inputs)
    finished = run.finished()
    if finished:
        return finished
    try:
        return _finetune(cfg, run, accelerator, splits, backbone, method, resume, head, protocol, extra)
    finally:
        run.close()  # the folder is free again, also when training fails


def _finetune(
    cfg: Config, run: Run, accelerator: Accelerator, splits: ImageSplits | None, backbone, method,
    resume: bool, head, protocol: str, extra: dict | None,
) -> dict:  # fmt: skip
    splits = splits or load_splits(cfg, accelerator)
    f = cfg.finetune
    labelled, val = subsets(cfg, splits)
    model = start_model(cfg, splits, backbone, head)
    lr, epochs = (f.lpft_lr, f.lpft_epochs) if head is not None else (f.lr, f.epochs)
    budget = f.lpft_steps if head is not None else f.steps
    if budget:  # a budget of optimizer steps, in whole epochs
        per_epoch = len(Batches(splits.train, labelled, f.batch_size, accelerator))
        epochs = max(1, math.ceil(budget / max(1, per_epoch)))
    run.start()
    tracker = Tracker(cfg, accelerator)
    model.to(accelerator.device)
    model, opt, sched, plain, state = finetune_run(
        model, cfg, accelerator, run, resume=resume, lr=lr, epochs=epochs
    )
    first_epoch, best, history, steps = 0, {"top1": -1.0, "epoch": 0, "state": None}, [], 0
    if state is not None:
        first_epoch, best, history = state["epoch"], state["best"], state["history"]
    elif head is not None and len(val):
        # LP-FT starts from the probe: that starting point is epoch 0, so the kept model is never
        # worse on validation than the probe's head
        start = {"epoch": 0, "val": evaluate(model, splits.train, val, accelerator, cfg)}
        state0 = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
        best, history = {"top1": start["val"]["top1"], "epoch": 0, "state": state0}, [start]
    label = method or _method_of(backbone)
    # dropout masks: one named stream per epoch, so a resumed run draws the same ones
    torch.manual_seed(derive_seed(cfg.run.seed, f"finetune/dropout/epoch{first_epoch}"))
    for epoch in epochs_of(
        cfg, run, accelerator, splits.train, labelled, f.batch_size, "finetune/order",
        first=first_epoch, count=epochs, desc=f"{protocol} {label} {f.regime:g}%",
    ):  # fmt: skip
        e = epoch.index
        augment = torch.Generator().manual_seed(derive_seed(cfg.run.seed, f"finetune/augment/epoch{e}"))
        model.train()
        total, seen = torch.zeros((), device=accelerator.device), 0
        for step, (x, y) in epoch:
            if f.augment:
                x = crop_flip(x, augment)
            with accelerator.autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total, seen = total + loss.detach().float() * len(y), seen + len(y)  # no sync per step
            if tracker.due(step):
                lr_now = opt.param_groups[0]["lr"]
                tracker.log({"train/loss": loss.detach().float(), "train/lr": lr_now}, step)
        check_finite(total.item() / max(1, seen), run, f"finetune epoch {e + 1}")
        lr = opt.param_groups[0]["lr"]
        sched.step()
        entry = epoch.record(loss=total.item() / max(1, seen), lr=lr)
        if len(val) and _validate_after(e, epochs, f.val_every):
            entry["val"] = evaluate(model, splits.train, val, accelerator, cfg)
            if entry["val"]["top1"] > best["top1"]:
                state = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
                best = {"top1": entry["val"]["top1"], "epoch": e + 1, "state": state}
        history.append(entry)
        steps = epoch.end
        scalars = {"epoch/loss": entry["loss"], "epoch/lr": lr, "epoch/seconds": entry["seconds"]}
        if "val" in entry:
            scalars |= {"val/top1": entry["val"]["top1"], "val/top5": entry["val"]["top5"]}
        tracker.log(scalars, steps)
        val_text = f", val top-1 {entry['val']['top1']:.2f}" if "val" in entry else ""
        run.log(f"{protocol} {label} {f.regime:g}% epoch {e + 1}/{epochs}: loss {entry['loss']:.4f}"
                f"{val_text}, {entry['seconds']:.1f} s")  # fmt: skip
        torch.manual_seed(derive_seed(cfg.run.seed, f"finetune/dropout/epoch{e + 1}"))
        if (e + 1) % cfg.run.checkpoint_every == 0 or e + 1 == epochs:
            run.save({"model": plain.state_dict(), "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "epoch": e + 1, "best": best,
                      "history": history})  # fmt: skip
    if best["state"] is not None:
        plain.load_state_dict(best["state"])
    test = evaluate(model, splits.test, None, accelerator, cfg)
    tracker.log({"test/top1": test["top1"], "test/top5": test["top5"]}, steps)
    metrics = {
        "done": True, "method": label, "protocol": protocol, "regime": f.regime, "seed": cfg.run.seed,
        "labelled": len(labelled), "validation": len(val),
        "best_epoch": best["epoch"] if best["state"] is not None else epochs, "test": test,
        **({"val": _val_of(history, best["epoch"])} if best["state"] is not None else {}),
        "history": history, "backbone": str(backbone) if backbone else None,
        **_throughput(history), **(extra or {}),
    }  # fmt: skip
    if run.main:
        save_weights(plain, run.dir / "model.safetensors")
    run.finish(metrics, f"{protocol} {label} {f.regime:g}% ({len(labelled)} labelled): "
                        f"test top-1 {test['top1']:.2f}, top-5 {test['top5']:.2f}")  # fmt: skip
    tracker.close()
    accelerator.free_memory()
    return metrics


def start_model(
    cfg: Config, splits: ImageSplits, backbone: str | pathlib.Path | None,
    head: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.nn.Module:  # fmt: skip
    """The model as fine-tuning starts it: seeded (``finetune.dropout``, ``finetune.head_norm``), then
    the backbone's weights but its classifier, then ``head`` as the classifier if given.

    Args:
        cfg: the configuration.
        splits: the dataset (channels, classes, size).
        backbone: safetensors of a pre-trained model of the same architecture, or None.
        head: ``(weight, bias)`` for the classifier, or None.

    Returns:
        The model on the CPU.

    Raises:
        ValueError: ``head`` is not shaped as the classifier.
    """
    model = build_model(cfg, splits, seed=cfg.run.seed, drop_rate=cfg.finetune.dropout,
                        head_norm=cfg.finetune.head_norm)  # fmt: skip
    last = classifier(model)
    if backbone is not None:
        prefix = next((n + "." for n, m in model.named_modules() if m is last and n), None)
        load_weights(model, backbone, skip=(prefix,) if prefix else ())
    if head is not None:
        weight, bias = head
        if last.weight.shape != weight.shape or last.bias is None or last.bias.shape != bias.shape:
            raise ValueError(
                f"head: expected weight {tuple(last.weight.shape)} and a bias, got {tuple(weight.shape)}, "
                f"{None if bias is None else tuple(bias.shape)}"
            )
        with torch.no_grad():
            last.weight.copy_(weight)
            last.bias.copy_(bias)
    return model


def _val_of(history: list[dict], epoch: int) -> dict:
    return next(e["val"] for e in history if e["epoch"] == epoch)


def _validate_after(epoch: int, epochs: int, every: int) -> bool:
    """Whether epoch ``epoch`` (from 0) is evaluated: every ``every``-th and the last (0: the last only)."""
    return epoch + 1 == epochs or (every > 0 and (epoch + 1) % every == 0)


def _method_of(backbone: str | pathlib.Path | None) -> str:
    if backbone is None:
        return "none"
    record = pathlib.Path(backbone).parent / "metrics.json"
    try:
        return str(json.loads(record.read_text())["method"])
    except (OSError, ValueError, KeyError):
        return "pretrained"


def images_per_second(history: list[dict]) -> float | None:
    """The images/s over the epochs of a run's history that timed them (``seconds`` and
    ``images_per_s``; a checkpoint from before the field counts without them), or None.

    Args:
        history: per-epoch entries (fine-tuning's, or a pre-training's).

    Returns:
        Images over seconds, summed over the timed epochs.
    """
    timed = [h for h in history if isinstance(h, dict) and h.get("seconds", 0) > 0 and "images_per_s" in h]
    if not timed:
        return None
    return sum(h["images_per_s"] * h["seconds"] for h in timed) / sum(h["seconds"] for h in timed)


def _throughput(history: list[dict]) -> dict:
    speed = images_per_second(history)
    return {} if speed is None else {"train_images_per_s": speed}
