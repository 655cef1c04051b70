"""Unsupervised pre-training of a backbone: any Hebbian rule, the VAE baseline, or none.

Hebbian pre-training (FastHebb §4.3): every training image, labels unused, batch 64, learning
rate η = 1e-3 (1e-4 on ImageNet), no weight decay or dropout; all hidden layers at once as the
paper, or one layer at a time (``schedule: layerwise``, ``epochs`` per layer). Each epoch ends
with an atomic checkpoint; ``resume`` continues from the last one and ends with the same weights
as an uninterrupted run.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import torch
from accelerate import Accelerator

from hebbopt.data import ImageSplits
from hebbopt.filters import save_filters
from hebbopt.models import layer_hyper
from hebbopt.models.flat_head import FlatHeadNet
from hebbopt.models.softhebb import SoftHebbNet
from hebbopt.optimizer import HebbianOptimizer
from hebbopt.rules import RULES
from hebbopt.selection import hebbian_layers
from hebbopt.training.checkpoints import load_checkpoint
from hebbopt.training.config import Config
from hebbopt.training.loop import epochs
from hebbopt.training.models import build_model
from hebbopt.training.run_folder import Run
from hebbopt.training.setup import load_splits, make_accelerator
from hebbopt.training.tracking import Tracker
from hebbopt.weights import save_weights


def hebbian_optimizer(cfg: Config, layers: dict) -> HebbianOptimizer:
    """The configured Hebbian rule over ``layers``.

    Args:
        cfg: the configuration: ``pretrain.method`` (a rule of :data:`hebbopt.rules.RULES`), η,
            ``pretrain.rule_kwargs[method]`` and, with ``pretrain.layer_defaults``, the per-layer
            settings a paper gives for this rule on this model (:func:`hebbopt.models.layer_hyper`).
        layers: ``{name: module}`` of the layers to train, as :func:`~hebbopt.hebbian_layers` gives.

    Returns:
        A :class:`~hebbopt.HebbianOptimizer` of that rule, its hooks in place.

    Raises:
        ValueError: ``pretrain.method`` is not a Hebbian rule.
    """
    p = cfg.pretrain
    if p.method not in RULES:
        raise ValueError(f"pretrain.method {p.method!r} is not a Hebbian rule ({', '.join(RULES)})")
    kwargs = dict(p.rule_kwargs.get(p.method, {}))
    groups = [{"modules": layers}]
    per_layer = layer_hyper(cfg.model.name, p.method) if p.layer_defaults else None
    if per_layer:
        groups = [
            {"modules": {n: m}, **{k: v for k, v in per_layer.get(n, {}).items() if k not in kwargs}}
            for n, m in layers.items()
        ]
    dtype = None if p.statistics_dtype == "float32" else getattr(torch, p.statistics_dtype)
    return HebbianOptimizer(groups, p.method, lr=p.lr, compile=p.compile, statistics_dtype=dtype, **kwargs)


def hebbian_forward(model: torch.nn.Module, layers: dict) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward pass a Hebbian step runs over ``model``.

    hebbopt's own networks (:class:`~hebbopt.models.softhebb.SoftHebbNet`,
    :class:`~hebbopt.models.flat_head.FlatHeadNet`) run up to the classifier's input,
    ``forward_head(forward_features(x), pre_logits=True)``: that leaves out exactly the head's
    dropout and classifier, which feed no Hebbian layer and keep no running statistics, so the
    Hebbian layers see what the whole forward gives them (``softhebb_3l`` at batch 10 spent 2.4 ms
    of a 49–76 ms CPU step drawing the dropout's mask). The whole forward for every other model,
    and where the classifier is itself one of ``layers``.

    Args:
        model: the network.
        layers: ``{name: module}`` of the Hebbian layers.

    Returns:
        a callable taking the batch.
    """
    if not isinstance(model, (SoftHebbNet, FlatHeadNet)):
        return model
    if any(m is model.get_classifier() for m in layers.values()):
        return model
    return lambda x: model.forward_head(model.forward_features(x), pre_logits=True)


class _StageDone(Exception):
    """Ends a layerwise stage's forward once its layer has been captured."""


def _stop_after(layer: torch.nn.Module) -> torch.utils.hooks.RemovableHandle:
    """A forward hook that raises :class:`_StageDone` after ``layer``: a layerwise stage then costs
    the forward up to its layer, not the whole network's (on softhebb_3l, whose last layer holds
    most of the work, the three stages cost ~1.1 simultaneous epochs instead of ~2). Safe under
    DDP in ``no_grad``: its forward has no pending reducer state to leave behind."""

    def hook(module, args, output):
        raise _StageDone

    return layer.register_forward_hook(hook)


def pretrain(
    cfg: Config,
    *,
    resume: bool = False,
    accelerator: Accelerator | None = None,
    splits: ImageSplits | None = None,
) -> pathlib.Path | None:
    """Pre-train ``cfg.model`` on ``cfg.data`` with ``cfg.pretrain.method``; return the backbone file.

    Writes to ``cfg.run.dir``: ``config.yaml``, ``log.txt``, ``checkpoint.pt`` (every epoch),
    ``backbone.safetensors`` and ``filters.png`` (first layer) at the end, ``metrics.json``
    (per-epoch wall-clock, images/s, relative weight change ‖ΔW‖/‖W‖ of each layer). With
    ``run.log_with``, logs the Hebbian diagnostics every ``run.log_every`` steps, and the epoch's
    figures, weight histograms and first-layer filters at each epoch
    (:class:`~hebbopt.training.tracking.Tracker`).
    ``method: vae`` runs :func:`~hebbopt.training.vae.pretrain_vae`.

    Args:
        cfg: the configuration (``data``, ``model``, ``pretrain``, ``run``; ``vae`` for the VAE).
        resume: continue the run in ``cfg.run.dir`` from its last checkpoint; a finished run
            returns its backbone at once.
        accelerator: the accelerator to use (the sweep shares one); default: a new one
            (:func:`~hebbopt.training.setup.make_accelerator`).
        splits: the dataset, already loaded (the sweep loads it once); default:
            :func:`~hebbopt.training.setup.load_splits`.

    Returns:
        The ``backbone.safetensors`` path; None for ``method: none`` (nothing to pre-train).

    Raises:
        ConfigError: the run folder holds another run (without ``resume``) or a different config,
            or the model cannot be built.
    """
    method = cfg.pretrain.method
    if method == "none":
        return None
    if method == "vae":
        from hebbopt.training.vae import pretrain_vae

        return pretrain_vae(cfg, resume=resume, accelerator=accelerator, splits=splits)
    accelerator = accelerator or make_accelerator(cfg)
    run = Run(cfg, accelerator, resume=resume)
    backbone = run.dir / "backbone.safetensors"
    if run.finished():
        run.log(f"{run.dir}: finished earlier, nothing to do")
        return backbone
    try:
        return _pretrain(cfg, run, accelerator, splits, backbone, resume)
    finally:
        run.close()  # the folder is free again, also when training fails


def _pretrain(
    cfg: Config, run: Run, accelerator: Accelerator, splits: ImageSplits | None, backbone: pathlib.Path,
    resume: bool,
) -> pathlib.Path:  # fmt: skip
    method = cfg.pretrain.method
    splits = splits or load_splits(cfg, accelerator)
    model = build_model(cfg, splits, seed=cfg.run.seed).to(accelerator.device)
    layers = hebbian_layers(model, include=cfg.pretrain.include, exclude=cfg.pretrain.exclude or ())
    run.start()
    tracker = Tracker(cfg, accelerator)
    convs = [m for m in layers.values() if isinstance(m, torch.nn.Conv2d)]
    first = convs[0] if convs else None
    stages = [layers] if cfg.pretrain.schedule == "all" else [{n: m} for n, m in layers.items()]
    first_stage, first_epoch, history, state = 0, 0, [], None
    if resume and run.checkpoint.exists():
        state = load_checkpoint(run.checkpoint)
        model.load_state_dict(state["model"])
        first_stage, first_epoch, history = state["stage"], state["epoch"], state["history"]
        run.log(f"resumed from {run.checkpoint}: stage {first_stage}, epoch {first_epoch}")
    everything = torch.arange(len(splits.train))
    for stage in range(first_stage, len(stages)):
        opt = hebbian_optimizer(cfg, stages[stage])
        if state is not None and stage == first_stage:
            opt.load_state_dict(state["optimizer"])
        names = ", ".join(stages[stage])
        # one layer per stage: the rest of the forward feeds no Hebbian layer, so stop there
        # (registered after the optimizer's capture hook, so it runs after the capture)
        layerwise = cfg.pretrain.schedule == "layerwise"
        stop = _stop_after(next(iter(stages[stage].values()))) if layerwise else None
        for epoch in epochs(
            cfg, run, accelerator, splits.train, everything, cfg.pretrain.batch_size,
            f"pretrain/order/stage{stage}", first=first_epoch if stage == first_stage else 0,
            count=cfg.pretrain.epochs, desc=f"{method} stage {stage}", offset=stage * cfg.pretrain.epochs,
        ):  # fmt: skip
            before = {n: m.weight.detach().clone() for n, m in stages[stage].items()}
            model.train()
            forward = hebbian_forward(model, stages[stage])
            for step, (x, _) in epoch:
                logged = tracker.due(step)
                opt.diagnostics = logged  # the weight copy and host sync only at logged steps
                try:
                    with torch.no_grad(), accelerator.autocast():
                        forward(x)
                except _StageDone:
                    pass
                opt.step()
                if logged:
                    tracker.hebbian(opt, step)
            change = {
                n: ((m.weight.detach() - before[n]).norm() / before[n].norm().clamp_min(1e-12)).item()
                for n, m in stages[stage].items()
            }
            entry = epoch.record(relative_change=change)
            history.append({"stage": stage, **entry})
            end, seconds, speed = epoch.end, entry["seconds"], entry["images_per_s"]
            tracker.log({"epoch/seconds": seconds, "epoch/images_per_s": speed,
                         **{f"epoch/relative_change/{n}": c for n, c in change.items()}}, end)  # fmt: skip
            tracker.histograms(stages[stage], end)
            tracker.filters(first, end)
            run.log(
                f"{method} stage {stage + 1}/{len(stages)} ({names}) "
                f"epoch {epoch.index + 1}/{cfg.pretrain.epochs}: "
                f"{seconds:.1f} s, {speed:.0f} images/s, max |ΔW|/|W| {max(change.values()):.3g}"
            )
            run.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "stage": stage,
                      "epoch": epoch.index + 1, "history": history})  # fmt: skip
        opt.close()
        if stop is not None:
            stop.remove()
    if run.main:
        save_weights(model, backbone)
        if first is not None:
            save_filters(first, run.dir / "filters.png")
    metrics = {"done": True, "method": method, "layers": list(layers), "history": history,
               "seconds": sum(h["seconds"] for h in history)}  # fmt: skip
    run.finish(metrics, f"{method}: backbone written to {backbone}")
    tracker.close()
    return backbone
