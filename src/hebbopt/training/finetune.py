"""Supervised fine-tuning on the labelled subset, then top-1/top-5 on the test split.

The paper's defaults (FastHebb §4.3): 20 epochs, batch 64, SGD lr 1e-3, momentum 0.9 with
Nesterov, lr constant for 10 epochs then halved every 2 epochs, dropout 0.5, cross-entropy, weight
decay 5e-2 (CIFAR-10); end to end; the model kept is the epoch with the best validation accuracy
(early stopping) when ``data.val_size`` > 0, else the last epoch.
"""

from __future__ import annotations

import json
import pathlib
import time

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from hebbopt.data import ImageSplits, labelled_subset, validation_split
from hebbopt.data.seeds import derive_seed
from hebbopt.selection import classifier
from hebbopt.training.batches import Batches, evaluate
from hebbopt.training.checkpoints import file_input
from hebbopt.training.config import Config, ConfigError
from hebbopt.training.models import build_model
from hebbopt.training.run_folder import Run, check_finite
from hebbopt.training.setup import load_splits, make_accelerator
from hebbopt.training.sgd import sgd_run
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

    Returns:
        The metrics: ``test`` (top1, top5 in %), ``labelled`` (images), ``best_epoch``, ``history``.

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
    finished = run.done()
    if finished:
        return finished
    splits = splits or load_splits(cfg, accelerator)
    f = cfg.finetune
    labelled, val = subsets(cfg, splits)
    model = build_model(cfg, splits, seed=cfg.run.seed, drop_rate=f.dropout)
    if backbone is not None:
        head = classifier(model)
        prefix = next((n + "." for n, m in model.named_modules() if m is head and n), None)
        load_weights(model, backbone, skip=(prefix,) if prefix else ())
    run.start()
    tracker = Tracker(cfg, accelerator)
    model.to(accelerator.device)
    model, opt, sched, plain, state = sgd_run(
        model, cfg, accelerator, run, resume=resume,
        lr=f.lr, momentum=f.momentum, nesterov=f.nesterov, weight_decay=f.weight_decay,
    )  # fmt: skip
    first_epoch, best, history, steps = 0, {"top1": -1.0, "epoch": 0, "state": None}, [], 0
    if state is not None:
        first_epoch, best, history = state["epoch"], state["best"], state["history"]
    label = method or _method_of(backbone)
    # dropout masks: one named stream per epoch, so a resumed run draws the same ones
    torch.manual_seed(derive_seed(cfg.run.seed, f"finetune/dropout/epoch{first_epoch}"))
    for epoch in range(first_epoch, f.epochs):
        batches = Batches(
            splits.train, labelled, f.batch_size, accelerator,
            order_seed=derive_seed(cfg.run.seed, f"finetune/order/epoch{epoch}"),
            channels_last=cfg.model.channels_last, workers=cfg.data.workers,
        )  # fmt: skip
        model.train()
        start, total, seen = time.perf_counter(), torch.zeros((), device=accelerator.device), 0
        base = epoch * len(batches)  # the run's global step
        desc = f"finetune {label} {f.regime:g}% epoch {epoch + 1}"
        for i, (x, y) in enumerate(run.progress(batches, desc)):
            with accelerator.autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            opt.step()
            total, seen = total + loss.detach().float() * len(y), seen + len(y)  # no sync per step
            if tracker.due(base + i):
                lr_now = opt.param_groups[0]["lr"]
                tracker.log({"train/loss": loss.detach().float(), "train/lr": lr_now}, base + i)
        check_finite(total.item() / max(1, seen), run, f"finetune epoch {epoch + 1}")
        lr = opt.param_groups[0]["lr"]
        sched.step()
        seconds = time.perf_counter() - start
        entry = {"epoch": epoch + 1, "seconds": seconds, "loss": total.item() / max(1, seen), "lr": lr}
        if len(val):
            entry["val"] = evaluate(model, splits.train, val, accelerator, cfg)
            if entry["val"]["top1"] > best["top1"]:
                state = {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()}
                best = {"top1": entry["val"]["top1"], "epoch": epoch + 1, "state": state}
        history.append(entry)
        steps = base + len(batches)
        scalars = {"epoch/loss": entry["loss"], "epoch/lr": lr, "epoch/seconds": seconds}
        if len(val):
            scalars |= {"val/top1": entry["val"]["top1"], "val/top5": entry["val"]["top5"]}
        tracker.log(scalars, steps)
        val_text = f", val top-1 {entry['val']['top1']:.2f}" if len(val) else ""
        run.log(f"finetune {label} {f.regime:g}% epoch {epoch + 1}/{f.epochs}: loss {entry['loss']:.4f}"
                f"{val_text}, {seconds:.1f} s")  # fmt: skip
        torch.manual_seed(derive_seed(cfg.run.seed, f"finetune/dropout/epoch{epoch + 1}"))
        run.save({"model": plain.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "epoch": epoch + 1, "best": best, "history": history})  # fmt: skip
    if best["state"] is not None:
        plain.load_state_dict(best["state"])
    test = evaluate(model, splits.test, None, accelerator, cfg)
    tracker.log({"test/top1": test["top1"], "test/top5": test["top5"]}, steps)
    metrics = {
        "done": True, "method": label, "regime": f.regime, "seed": cfg.run.seed, "labelled": len(labelled),
        "validation": len(val), "best_epoch": best["epoch"] if best["state"] is not None else f.epochs,
        "test": test, "history": history, "backbone": str(backbone) if backbone else None,
    }  # fmt: skip
    if run.main:
        save_weights(plain, run.dir / "model.safetensors")
    run.finish(metrics, f"finetune {label} {f.regime:g}% ({len(labelled)} labelled): "
                        f"test top-1 {test['top1']:.2f}, top-5 {test['top5']:.2f}")  # fmt: skip
    tracker.close()
    accelerator.free_memory()
    return metrics


def _method_of(backbone: str | pathlib.Path | None) -> str:
    if backbone is None:
        return "none"
    record = pathlib.Path(backbone).parent / "metrics.json"
    try:
        return str(json.loads(record.read_text())["method"])
    except (OSError, ValueError, KeyError):
        return "pretrained"
