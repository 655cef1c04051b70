"""SoftHebb's linear probe on frozen features: dropout → Linear, Adam, the learning rate halved at
milestones, features scaled by the training split's statistics (:func:`feature_scaler`).

Pure: tensors in, numbers out. Features or a training loss that are not finite raise
``FloatingPointError``: nothing computed on NaN comes back as a result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hebbopt.data.seeds import derive_seed

MILESTONES = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Where :func:`linear_probe` halves its learning rate, as fractions of the epochs (SoftHebb)."""


def milestones(epochs: int) -> list[int]:
    """The epochs after which :func:`linear_probe` halves its learning rate.

    ``⌊f · epochs⌋`` for f in :data:`MILESTONES` (20, 35, 50, 60, 70, 80, 90 %), those ≥ 1 kept;
    as ``MultiStepLR`` milestones, the learning rate of epoch e (from 0) is
    ``lr · 0.5^(number of milestones ≤ e)`` (a milestone listed twice halves twice).

    Args:
        epochs: the probe's epochs.

    Returns:
        The milestones, in order.

    Examples:
        >>> milestones(50)
        [10, 17, 25, 30, 35, 40, 45]
        >>> milestones(4)
        [1, 2, 2, 2, 3, 3]
    """
    return [m for m in (int(f * epochs) for f in MILESTONES) if m >= 1]


def _check_queries(train_x, train_y, test_x, test_y) -> None:
    _check_pair(train_x, train_y, "train")
    _check_pair(test_x, test_y, "test")
    if len(train_x) == 0:
        raise ValueError("no training features")
    _check_finite(train_x, "train")
    _check_finite(test_x, "test")


def _check_finite(x: torch.Tensor, name: str, chunk: int = 4096) -> None:
    """Refuse NaN or infinite features (a chunk of rows at a time: no N×D mask is made)."""
    for start in range(0, len(x), chunk):
        finite = torch.isfinite(x[start : start + chunk]).all(dim=1)
        if not finite.all():
            row = start + int((~finite).nonzero()[0])
            raise FloatingPointError(
                f"{name}: the features hold non-finite values (NaN or inf), first in row {row}: the "
                "backbone's weights or the data's statistics are not finite"
            )


def _check_pair(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{name}: features must be N×D with N labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )


@torch.no_grad()
def _accuracy(weight, bias, x: torch.Tensor, y: torch.Tensor, device, prep=None, chunk: int = 4096) -> dict:
    hits = torch.zeros(2, dtype=torch.float64)
    k = min(5, weight.shape[0])
    for start in range(0, len(x), chunk):
        xb = x[start : start + chunk].to(device, torch.float32)
        xb = prep(xb) if prep is not None else xb
        yb = y[start : start + chunk].to(device)
        top = F.linear(xb, weight, bias).topk(k, dim=1).indices == yb[:, None]
        hits += torch.stack([top[:, 0].sum(), top.any(1).sum()]).double().cpu()
    n = max(1, len(x))
    return {"top1": 100 * hits[0].item() / n, "top5": 100 * hits[1].item() / n, "images": len(x)}


def dropout_(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout in place: keep each element with probability q, scale the kept by 1/q.

    q = round(2¹⁶ (1 − p)) / 2¹⁶ (p rounded to 1/65536). Each element draws 16 random bits, cut
    from 64-bit draws (a quarter as many draws as elements): ~5× faster on a CPU than
    ``bernoulli_``, whose per-element draw dominated a probe step on 24,576 features.

    Args:
        x: the tensor, changed in place.
        p: the drop probability, in [0, 1).
        generator: the random stream (on ``x``'s device).

    Returns:
        ``x``.
    """
    threshold = max(1, round(65536 * (1 - p)))  # keep where the 16 bits, as 0..65535, are below
    n = x.numel()
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, generator=generator,
                          device=x.device)  # fmt: skip
    bits = draws.view(torch.int16)[:n].view(x.shape)  # as signed: value − 32768
    return x.mul_(bits < threshold - 32768).mul_(65536 / threshold)


NORMALIZE = ("none", "standardize", "l2")


@torch.no_grad()
def feature_scaler(train_x: torch.Tensor, how: str, device=None, chunk: int = 4096):
    """The map applied to every feature batch before the linear probe's dropout and layer.

    - ``none``: the features as they are (SoftHebb's probe).
    - ``standardize``: z_d = (x_d − μ_d) / (σ_d + 1e-8 · max σ), μ and σ (population) per feature
      over ``train_x``, the labelled training features (in float64, by chunks).
    - ``l2``: z = √D · x / max(‖x‖₂, 1e-12) per sample (unit mean square).

    Args:
        train_x: the training features, N×D.
        how: one of :data:`NORMALIZE`.
        device: where the batches will be.
        chunk: rows per pass when computing μ and σ.

    Returns:
        A function of an N×D float32 batch (returning a new tensor), or None for ``none``.

    Raises:
        ValueError: ``how`` is not one of :data:`NORMALIZE`.
    """
    if how not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {how!r}")
    if how == "none":
        return None
    dim = train_x.shape[1]
    if how == "l2":
        return lambda x: x * (dim**0.5 / x.norm(dim=1, keepdim=True).clamp_min(1e-12))
    total = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, len(train_x), chunk):
        total += train_x[start : start + chunk].double().sum(0).cpu()
    mean = total / max(1, len(train_x))
    square = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, len(train_x), chunk):  # two passes: no cancellation for large means
        square += (train_x[start : start + chunk].double().cpu() - mean).square().sum(0)
    std = (square / max(1, len(train_x))).sqrt()
    std = std + 1e-8 * std.max().clamp_min(1e-30)  # constant features (dead units) stay 0
    mean32, inv32 = mean.float().to(device), (1 / std).float().to(device)
    return lambda x: (x - mean32) * inv32


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    num_classes: int,
    epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    dropout: float = 0.5,
    seed: int = 0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    normalize: str = "none",
    flipped_x: torch.Tensor | None = None,
    return_head: bool = False,
    progress: bool = False,
) -> dict:
    """SoftHebb's linear probe: Dropout(``dropout``) → Linear on frozen features, then test accuracy.

    Adam (``lr``), cross-entropy, ``epochs`` epochs of shuffled batches of ``batch_size`` (the last
    one may be smaller), the learning rate halved after the :func:`milestones` epochs (20, 35, 50,
    60, 70, 80, 90 % of them). Batches are gathered from ``train_x`` row by row (no copy of the
    feature matrix is made; float32 features are used as they are) and moved to ``device``. With
    ``val``, the weights kept are those of the epoch with the best validation top-1 (the earliest
    of equals), as fine-tuning keeps its best epoch; else the last epoch's.

    Deterministic for a seed, without touching torch's global random state: the initialisation
    (``nn.Linear``'s, uniform in ±1/√D) and the batch order come from the named stream
    ``"probe/init_and_order"`` of ``seed``, the dropout masks from ``"probe/dropout"``
    (:func:`~hebbopt.data.seeds.derive_seed`). With ``flipped_x`` (the features of the same
    training images mirrored), every sample of every epoch is drawn from the image or its mirror
    with probability 1/2 (random horizontal flips; stream ``"probe/flip"``); SoftHebb's probe has
    no augmentation.

    Args:
        train_x: training features, N×D (float32 avoids a conversion per batch).
        train_y: their classes, N integers in [0, ``num_classes``).
        test_x: test features, M×D.
        test_y: their classes.
        num_classes: outputs of the linear layer.
        epochs: training epochs (0: the initialisation is evaluated).
        batch_size: features per step.
        lr: Adam's initial learning rate.
        dropout: the dropout rate on the features, in [0, 1).
        seed: the initialisation, batch order and dropout masks.
        normalize: how every feature batch (training, validation and test) is scaled first
            (:func:`feature_scaler`): ``none`` (SoftHebb), ``standardize`` or ``l2``.
        val: ``(val_x, val_y)``: validation features for choosing the epoch, or None.
        device: where the classifier trains (default: ``train_x``'s device).
        flipped_x: features of the mirrored training images, shaped like ``train_x``, or None.
        return_head: also return the kept weight and bias.
        progress: show a progress bar (one step per epoch); callers pass it on the main process only.

    Returns:
        ``{"test": {"top1", "top5", "images"}, "val": {...} (with ``val``), "best_epoch",
        "history": [{"epoch", "loss", "lr", "val_top1" (with ``val``)}, ...], "features": D}``
        (accuracies in %), and with ``return_head`` ``"head": (weight, bias)``, the kept
        classifier on the CPU (of the scaled features: LP-FT's second phase starts from it).

    Raises:
        ValueError: features and labels that do not match, no training features, ``flipped_x``
            shaped unlike ``train_x``, or a setting out of range (``epochs`` < 0, ``batch_size``
            < 1, ``lr`` ≤ 0, ``dropout`` outside [0, 1)).
        FloatingPointError: features that are not finite (named: train, val, test or flipped), or a
            training loss or weights that become non-finite (e.g. a learning rate far too large):
            nothing trained on NaN is returned as a result.
    """
    _check_pair(train_x, train_y, "train")
    _check_pair(test_x, test_y, "test")
    if val is not None:
        _check_pair(val[0], val[1], "val")
    if len(train_x) == 0:
        raise ValueError("no training features")
    if flipped_x is not None and flipped_x.shape != train_x.shape:
        raise ValueError(
            f"flipped_x must be shaped like train_x {tuple(train_x.shape)}, got {tuple(flipped_x.shape)}"
        )
    named = {"train": train_x, "test": test_x, "val": None if val is None else val[0], "flipped": flipped_x}
    for name, features in named.items():
        if features is not None:
            _check_finite(features, f"linear probe: {name}")
    if epochs < 0 or batch_size < 1 or not lr > 0 or not 0 <= dropout < 1:
        raise ValueError(
            f"need epochs >= 0, batch_size >= 1, lr > 0, dropout in [0, 1); got {epochs}, {batch_size}, "
            f"{lr}, {dropout}"
        )
    device = torch.device(device) if device is not None else train_x.device
    prep = feature_scaler(train_x, normalize, device)
    n, dim = train_x.shape
    g = torch.Generator().manual_seed(derive_seed(seed, "probe/init_and_order"))
    bound = 1 / math.sqrt(dim)
    weight = torch.empty(num_classes, dim).uniform_(-bound, bound, generator=g).to(device).requires_grad_()
    bias = torch.empty(num_classes).uniform_(-bound, bound, generator=g).to(device).requires_grad_()
    drop = torch.Generator(device=device).manual_seed(derive_seed(seed, "probe/dropout"))
    coin = torch.Generator().manual_seed(derive_seed(seed, "probe/flip"))
    opt = torch.optim.Adam([weight, bias], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones(epochs), gamma=0.5)
    history: list[dict] = []
    best = {"top1": -1.0, "epoch": epochs, "state": None}
    labels = train_y.long()
    for epoch in tqdm(range(epochs), desc="linear probe", unit="epoch", leave=False, disable=not progress):
        order = torch.randperm(n, generator=g)
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = train_x[idx.to(train_x.device)]
            if flipped_x is not None:
                mirrored = torch.rand(len(idx), generator=coin) < 0.5
                x[mirrored] = flipped_x[idx[mirrored].to(flipped_x.device)].to(x.dtype)
            x = x.to(device, torch.float32, non_blocking=True)
            x = prep(x) if prep is not None else x
            if dropout > 0:
                dropout_(x, dropout, drop)
            y = labels[idx.to(labels.device)].to(device)
            loss = F.cross_entropy(F.linear(x, weight, bias), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach().double() * len(idx)
        entry = {"epoch": epoch + 1, "loss": total.item() / n, "lr": opt.param_groups[0]["lr"]}
        if not math.isfinite(entry["loss"]):
            raise FloatingPointError(
                f"linear probe: the training loss is {entry['loss']} at epoch {epoch + 1}: lower the "
                f"learning rate (probe.lr {lr:g})"
            )
        sched.step()
        if val is not None:
            on_val = _accuracy(weight.detach(), bias.detach(), val[0], val[1], device, prep)
            entry["val_top1"] = on_val["top1"]
            if entry["val_top1"] > best["top1"]:
                best = {"top1": entry["val_top1"], "epoch": epoch + 1,
                        "state": (weight.detach().clone(), bias.detach().clone())}  # fmt: skip
        history.append(entry)
    w, b = best["state"] if best["state"] is not None else (weight.detach(), bias.detach())
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):  # the last step's update overflowed
        raise FloatingPointError(
            f"linear probe: the classifier's weights are not finite: lower probe.lr ({lr:g})"
        )
    result: dict = {
        "test": _accuracy(w, b, test_x, test_y, device, prep),
        "best_epoch": best["epoch"],
        "history": history,
        "features": dim,
    }
    if return_head:
        result["head"] = (w.cpu(), b.cpu())
    if val is not None:
        result["val"] = _accuracy(w, b, val[0], val[1], device, prep)
    return result
