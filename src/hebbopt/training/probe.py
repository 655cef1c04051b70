"""Evaluation protocols on a frozen backbone: features, a linear probe, k-nearest neighbours, retrieval.

Beside fine-tuning (every layer trained on the labelled images), these measure the features a
pre-training produced without changing them:

| function | protocol |
|---|---|
| :func:`extract_features` | the frozen backbone's flattened pre-classifier features, computed once |
| :func:`estimate_norm_statistics` | a random start's BatchNorm statistics, from one pass over the images |
| :func:`linear_probe` | SoftHebb's linear classifier: dropout → Linear, Adam, lr halved at milestones |
| :func:`knn` | k-nearest neighbours on cosine similarity, majority vote |
| :func:`retrieval` | each test image queries the training set: precision@k and mAP |

Everything here is pure: tensors in, numbers out; no run folders (the sweep,
:func:`~hebbopt.training.semisup.semisup`, records and resumes them). Similarities are computed a
block of queries at a time, so memory stays bounded by ``chunk_size`` × training images. Features,
statistics or a training loss that are not finite raise ``FloatingPointError``: nothing computed on
NaN comes back as a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from hebbopt.data.seeds import derive_seed

MILESTONES = (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Where :func:`linear_probe` halves its learning rate, as fractions of the epochs (SoftHebb)."""

_ELEMENTS = 1 << 22
"""Default similarity block: about 4 M entries (queries × training images) per chunk."""


def _features(model: nn.Module, x: torch.Tensor, pre_logits: bool) -> torch.Tensor:
    if pre_logits and hasattr(model, "forward_head") and hasattr(model, "forward_features"):
        out = model.forward_head(model.forward_features(x), pre_logits=True)
    elif hasattr(model, "forward_features"):
        out = model.forward_features(x)
    else:
        out = model(x)
    return out.flatten(1).float()


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: Dataset | torch.Tensor,
    *,
    indices: torch.Tensor | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    pre_logits: bool = True,
    channels_last: bool = False,
    workers: int = 0,
    flip: bool = False,
    progress: bool = False,
    desc: str = "features",
) -> torch.Tensor:
    """The frozen backbone's features of ``images``: float32, one flattened row per image.

    The model runs in eval mode (BatchNorm uses its running statistics, dropout is off) under
    ``torch.no_grad``, then goes back to its mode; no weight changes. The features are, with
    ``pre_logits`` (default), timm's ``model.forward_head(model.forward_features(x),
    pre_logits=True)`` flattened: exactly what the classifier sees, so a linear probe on them is
    "the frozen backbone with a new linear head" (for timm models this includes their global
    pooling; for ``hebb_alexnet_*`` the Hebbian-trained hidden Linear layer, ``fc_dim`` features).
    Without ``pre_logits``, ``model.forward_features(x)`` flattened: the last feature map, as
    SoftHebb probes its networks (no hidden Linear layer there). Models without ``forward_features``
    give ``model(x)`` flattened.

    Args:
        model: the backbone (any ``nn.Module``; timm's interface is used when present).
        images: a :class:`~hebbopt.data.datasets.TensorImages` (normalised batches gathered from
            its uint8 tensor), any dataset of ``(x, y)`` items (read through a DataLoader), or a tensor
            ``N×C×H×W`` (uint8 is scaled to 0–1 first; then ``(x − mean) / std`` if ``mean`` is given).
        indices: the images to take, in this order (default: all).
        batch_size: images per forward pass.
        device: where the model runs (default: the device of its first parameter); the model is
            moved there.
        mean: per-channel means on the 0–1 scale, for a tensor ``images`` (datasets normalise
            themselves).
        std: per-channel standard deviations, with ``mean``.
        pre_logits: the pre-classifier features (see above); False: the flattened feature map.
        channels_last: batches in channels-last memory format (as the model was trained).
        workers: DataLoader workers, for datasets other than ``TensorImages``.
        flip: the features of the images mirrored left to right (for the probe's augmentation).
        progress: show a progress bar (one step per batch); callers pass it on the main process only.
        desc: what the progress bar and the errors call these features.

    Returns:
        A float32 ``len(indices)×D`` tensor on the CPU.

    Raises:
        ValueError: ``batch_size`` < 1, ``std`` without ``mean`` (or the other way round), or no
            images to take.
        FloatingPointError: ``mean`` or ``std`` is not finite, or a batch's features are not (the
            backbone's weights or the data's statistics are NaN or infinite): a probe on them would
            train on NaN.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (mean is None) != (std is None):
        raise ValueError("give mean and std together (or neither)")
    if mean is not None and not torch.isfinite(torch.tensor([*mean, *std], dtype=torch.float64)).all():
        raise FloatingPointError(
            f"{desc}: the normalisation is not finite (mean {list(mean)}, std {list(std)})"
        )
    n_all = len(images)
    index = torch.arange(n_all) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    if len(index) == 0:
        raise ValueError("no images to take features of")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    scale = None
    if mean is not None and std is not None:
        scale = tuple(torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(device) for v in (mean, std))

    batches = _image_batches(images, index, batch_size, workers)
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    done = 0
    steps = math.ceil(len(index) / batch_size)
    try:
        for x in tqdm(batches, total=steps, desc=desc, unit="batch", leave=False, disable=not progress):
            x = x.to(device, non_blocking=True)
            if scale is not None:
                x = (x - scale[0]) / scale[1]
            if flip:
                x = torch.flip(x, dims=[-1])
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            f = _features(model, x, pre_logits).cpu()
            if not torch.isfinite(f).all():
                raise FloatingPointError(
                    f"{desc}: the features of images {done}..{done + len(f) - 1} (of {len(index)}) hold "
                    "non-finite values (NaN or inf): the backbone's weights or the data's statistics are not "
                    "finite"
                )
            if out is None:  # one buffer, filled in place: no list of batches to concatenate
                out = torch.empty(len(index), f.shape[1], dtype=torch.float32)
            out[done : done + len(f)] = f
            done += len(f)
    finally:
        model.train(was_training)
    assert out is not None and done == len(index)
    return out


def _image_batches(images, index: torch.Tensor, batch_size: int, workers: int):
    """The images of ``index`` in batches of ``batch_size``, float, on the CPU (as
    :func:`extract_features` describes ``images``)."""
    from hebbopt.data import TensorImages

    if isinstance(images, (TensorImages, torch.Tensor)):
        for start in range(0, len(index), batch_size):
            chunk = index[start : start + batch_size]
            if isinstance(images, TensorImages):
                yield images.batch(chunk)[0]
            else:
                x = images[chunk]
                yield x.float() / 255 if x.dtype == torch.uint8 else x.float()
    else:
        loader = DataLoader(Subset(images, index.tolist()), batch_size=batch_size, num_workers=workers)
        yield from (x for x, _ in loader)


@torch.no_grad()
def estimate_norm_statistics(
    model: nn.Module,
    images: Dataset | torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    channels_last: bool = False,
    workers: int = 0,
    progress: bool = False,
    desc: str = "BatchNorm statistics",
) -> int:
    """Set every BatchNorm layer's running statistics to those of ``images``; no weight changes.

    Each BatchNorm's running mean and variance restart and become the cumulative average over
    every batch of one pass in train mode (``momentum=None``; each layer normalises with its batch
    statistics, so each sees what the layers before it give in training), then the momenta and the
    model's mode come back. A Hebbian backbone gets its statistics from its pre-training's forward
    passes; a random start gets them here, before features are taken of it: without them a deep
    network of SoftHebb blocks (BatchNorm without affine, then convolution and a power activation)
    multiplies the scale of its activations by orders of magnitude at each layer.

    Args:
        model: the network.
        images: as in :func:`extract_features` (all of them are used, in order).
        batch_size: images per forward pass (at least 2: a batch's variance needs two).
        device: where the model runs (default: the device of its first parameter).
        channels_last: batches in channels-last memory format.
        workers: DataLoader workers, for datasets other than ``TensorImages``.
        progress: show a progress bar.
        desc: what the progress bar calls this pass.

    Returns:
        the number of BatchNorm layers set (0: nothing to do, no pass is made).

    Raises:
        ValueError: ``batch_size`` < 2.
        FloatingPointError: a running statistic came out non-finite (the statistics are put back as
            they were).
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (a batch's variance needs two images), got {batch_size}")
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return 0
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    model.to(device)
    saved = [(m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    index = torch.arange(len(images))
    steps = math.ceil(len(index) / batch_size)
    try:
        for x in tqdm(_image_batches(images, index, batch_size, workers), total=steps, desc=desc,
                      unit="batch", leave=False, disable=not progress):  # fmt: skip
            if len(x) < 2:
                continue  # a last batch of one image has no variance
            x = x.to(device, non_blocking=True)
            model(x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x)
        bad = [
            m
            for m in norms
            if not (torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all())
        ]
        if bad:
            raise FloatingPointError(f"{desc}: {len(bad)} BatchNorm layers got non-finite running statistics")
    except BaseException:
        for m, (momentum, state) in zip(norms, saved, strict=True):
            m.load_state_dict(state)
            m.momentum = momentum
        raise
    finally:
        model.train(was_training)
    for m, (momentum, _) in zip(norms, saved, strict=True):
        m.momentum = momentum
    return len(norms)


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


def _inverse_norms(x: torch.Tensor) -> torch.Tensor:
    return 1 / x.float().norm(dim=1).clamp_min(1e-12)


def _chunk(chunk_size: int | None, n_train: int) -> int:
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size
    return max(1, _ELEMENTS // max(1, n_train))


def _similarities(train, inv_train, queries, device):
    """Cosine similarities of a block of queries with every training row: Q×N (no normalised copy
    of the training features is made: the matmul is scaled by the inverse norms)."""
    q = queries.to(device, torch.float32)
    q = q * _inverse_norms(q)[:, None]
    return (q @ train.T) * inv_train[None, :]


@torch.no_grad()
def knn(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    k: int | Sequence[int] = 20,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    predictions: bool = False,
) -> dict:
    """k-nearest-neighbour classification on cosine similarity, by majority vote.

    Each test feature is compared with every training feature by cosine similarity (the dot product
    of L2-normalised rows; a zero row has similarity 0 with everything); its k most similar training
    rows vote, one vote each. The class with the most votes wins; a tie between classes goes to the
    one whose best-ranked neighbour is nearer (the tied class met first in the neighbour list),
    which is deterministic. Top-5 ranks the classes the same way (classes without a vote after
    those with one, by class index). ``k`` larger than the training set is cut to its size.
    Neighbours of exactly equal similarity are ordered as ``torch.topk`` orders them.

    Similarities are computed ``chunk_size`` queries at a time (default: about 4 M similarities per
    block), so memory stays bounded; all ``k`` share one neighbour search.

    Args:
        train_x: training (labelled) features, N×D.
        train_y: their classes, N integers.
        test_x: query features, M×D.
        test_y: their classes.
        k: neighbours that vote, or several values of k to evaluate at once.
        num_classes: the classes (default: the largest label seen + 1).
        chunk_size: queries per similarity block (default: ~4 M / N).
        device: where the similarities are computed (default: ``train_x``'s device); ``train_x`` is
            moved there once if it is elsewhere.
        predictions: also return each query's predicted class.

    Returns:
        For an integer ``k``: ``{"top1", "top5", "images", "k"}`` (accuracies in %), with
        ``"predictions"`` (an int64 tensor of M classes) when asked; for a sequence: ``{k: that
        dict}`` for each k.

    Raises:
        ValueError: features and labels that do not match, no training features, or a k < 1.
        FloatingPointError: features that are not finite (train or test, named).
    """
    _check_queries(train_x, train_y, test_x, test_y)
    ks = [k] if isinstance(k, int) else [int(v) for v in k]
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {k!r}")
    device = torch.device(device) if device is not None else train_x.device
    n = len(train_x)
    classes = int(num_classes if num_classes is not None else max(int(train_y.max()), int(test_y.max())) + 1)
    train = train_x.to(device, torch.float32)
    inv = _inverse_norms(train)
    labels = train_y.to(device).long()
    k_max = min(max(ks), n)
    hits = {v: torch.zeros(2, dtype=torch.float64) for v in ks}
    preds = {v: [] for v in ks}
    step = _chunk(chunk_size, n)
    for start in range(0, len(test_x), step):
        sim = _similarities(train, inv, test_x[start : start + step], device)
        near = labels[sim.topk(k_max, dim=1).indices]  # Q×k_max classes, most similar first
        truth = test_y[start : start + step].to(device).long()
        for v in ks:
            top = _vote(near[:, : min(v, n)], classes)
            preds[v].append(top[:, 0].cpu())
            match = top == truth[:, None]
            hits[v] += torch.stack([match[:, 0].sum(), match.any(1).sum()]).double().cpu()
    m = max(1, len(test_x))
    out = {}
    for v in ks:
        out[v] = {"top1": 100 * hits[v][0].item() / m, "top5": 100 * hits[v][1].item() / m,
                  "images": len(test_x), "k": min(v, n)}  # fmt: skip
        if predictions:
            out[v]["predictions"] = torch.cat(preds[v]) if preds[v] else torch.zeros(0, dtype=torch.long)
    return out[k] if isinstance(k, int) else out


def _vote(near: torch.Tensor, classes: int) -> torch.Tensor:
    """The classes ranked by votes (ties: nearest first neighbour, then class index): Q×min(5, C)."""
    q, k = near.shape
    counts = torch.zeros(q, classes, dtype=torch.long, device=near.device)
    counts.scatter_add_(1, near, torch.ones_like(near))
    first = torch.full((q, classes), k, dtype=torch.long, device=near.device)
    rank = torch.arange(k, device=near.device).expand(q, k)
    first.scatter_reduce_(1, near, rank, reduce="amin")
    index = torch.arange(classes, device=near.device)
    # votes dominate (a vote is worth more than any rank difference), then the first rank, then the index
    score = (counts * (k + 1) - first) * classes + (classes - 1 - index)
    return score.topk(min(5, classes), dim=1).indices


@torch.no_grad()
def retrieval(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    ks: Sequence[int] = (10, 50, 100),
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Image retrieval: each test feature queries the training set, ranked by cosine similarity.

    A training item is relevant to a query when it has the query's class. For each query,
    precision@k is the share of relevant items among the k most similar (k cut to the training
    set's size), and the average precision (AP) is the mean, over the relevant items, of the
    precision at each one's rank in the full ranking:
    ``AP = (1/R) Σ_{i relevant} (relevant items in the top i) / i`` with R relevant items (what
    ``sklearn.metrics.average_precision_score`` gives when no two similarities are equal). mAP is
    the mean AP over the queries that have at least one relevant item; precision@k is averaged over
    every query. Items of exactly equal similarity keep their training order. Computed
    ``chunk_size`` queries at a time (default: about 4 M similarities per block).

    Args:
        train_x: the searched features, N×D.
        train_y: their classes.
        test_x: the query features, M×D.
        test_y: their classes.
        ks: the k of precision@k.
        chunk_size: queries per block (default: ~4 M / N).
        device: where the similarities are computed (default: ``train_x``'s device).

    Returns:
        ``{"map": %, "p@<k>": % for each k, "queries": M, "queries_with_relevant": n}``.

    Raises:
        ValueError: features and labels that do not match, no training features, or a k < 1.
        FloatingPointError: features that are not finite (train or test, named).
    """
    _check_queries(train_x, train_y, test_x, test_y)
    ks = [int(v) for v in ks]
    if ks and min(ks) < 1:
        raise ValueError(f"every k must be >= 1, got {ks}")
    device = torch.device(device) if device is not None else train_x.device
    n = len(train_x)
    train = train_x.to(device, torch.float32)
    inv = _inverse_norms(train)
    labels = train_y.to(device).long()
    ap_sum, with_relevant = 0.0, 0
    precision = {v: 0.0 for v in ks}
    ranks = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    step = _chunk(chunk_size, n)
    for start in range(0, len(test_x), step):
        sim = _similarities(train, inv, test_x[start : start + step], device)
        order = sim.argsort(dim=1, descending=True, stable=True)
        truth = test_y[start : start + step].to(device).long()
        relevant = labels[order] == truth[:, None]
        del order, sim
        found = relevant.cumsum(1)
        total = found[:, -1]
        ap = (relevant * (found / ranks)).sum(1) / total.clamp_min(1)
        ap_sum += ap[total > 0].sum().item()
        with_relevant += int((total > 0).sum())
        for v in ks:
            c = min(v, n)
            precision[v] += (found[:, c - 1].double() / c).sum().item()
    m = max(1, len(test_x))
    out = {"map": 100 * ap_sum / max(1, with_relevant)}
    out |= {f"p@{v}": 100 * precision[v] / m for v in ks}
    return out | {"queries": len(test_x), "queries_with_relevant": with_relevant}
