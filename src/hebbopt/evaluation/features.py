"""The frozen backbone's features, and a random start's BatchNorm statistics: what the frozen
protocols (:mod:`hebbopt.evaluation.linear`, :mod:`hebbopt.evaluation.neighbours`) take.

Pure: a model and images in, tensors out; no run folders (the sweep,
:func:`~hebbopt.sweeps.semisup.semisup`, records and resumes them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm


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
