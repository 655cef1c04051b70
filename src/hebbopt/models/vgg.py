"""A CIFAR-size VGG as a timm model: ``hebb_vgg11`` (VGG11's eight 3×3 convolutions, 32 px).

Importing :mod:`hebbopt` registers it, so ``timm.create_model("hebb_vgg11", num_classes=10)`` works.
timm's own ``vgg11_bn`` is the ImageNet network (its ``pre_logits`` is a 7×7 convolution to 4096
channels, sized for 224 px); this is the CIFAR variant used across the Hebbian literature: the
same eight convolutions and five max-pools, and the classifier on the flattened last map
(512 × 1 × 1 at 32 px), no hidden Linear layers.

Two blocks build the same geometry (``block=``):

- ``bn_relu`` (default): conv 3×3 (zero padding 1, no bias) → BatchNorm → ReLU → [max-pool 2], VGG's
  batch-normalised form;
- ``softhebb``: SoftHebb's block (Journé et al., ICLR 2023), BatchNorm(affine=False) → conv 3×3
  (reflect padding 1, no bias) → :class:`~hebbopt.models.softhebb.Triangle` → [max-pool 2], each
  convolution from N(0, (25/√fan_in)²). The SoftHebb rule needs it (as on the AlexNet-like
  networks, docs/benchmarks.md). Each layer's triangle power and the rule's per-layer temperature
  and learning rate (:data:`SOFTHEBB_VGG_HYPER`, used with ``pretrain.layer_defaults``) follow
  :func:`~hebbopt.models.alexnet.softhebb_block_settings`, layer by layer.

| model       | convolutions (out channels, M = max-pool 2)           | input | features at 32 px |
|-------------|-------------------------------------------------------|-------|-------------------|
| hebb_vgg11  | 64 M 128 M 256 256 M 512 512 M 512 512 M               | 32×32 | 512               |
"""

from __future__ import annotations

from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from hebbopt.models.alexnet import softhebb_block_settings
from hebbopt.models.cfgs import small_image_cfg
from hebbopt.models.flat_head import FlatHeadNet
from hebbopt.models.softhebb import MaxPool2d, SoftHebbBlock

LAYERS = {"vgg11": [(64, 2), (128, 2), (256, 0), (256, 2), (512, 0), (512, 2), (512, 0), (512, 2)]}
"""Convolutions of each network: ``(out channels, max-pool after the layer (0 = none))``."""

BLOCKS = ("bn_relu", "softhebb")
"""The blocks :class:`HebbVGG` builds (``block=``)."""

SOFTHEBB_VGG_HYPER: dict[str, dict[str, dict[str, float]]] = {
    f"hebb_{name}": {
        f"features.{i}.conv": {"temperature": 1.0 / t_invert, "lr": lr}
        for i, (_, t_invert, lr) in enumerate(softhebb_block_settings(len(layers)))
    }
    for name, layers in LAYERS.items()
}
"""The SoftHebb rule's per-layer ``temperature`` (1 / t_invert) and ``lr`` on the ``block="softhebb"``
VGGs, by layer name (the ``bn_relu`` layers are named ``features.<i>`` for other indices and
modules, so these never apply to them)."""


class HebbVGG(FlatHeadNet):
    """A VGG for small images, with timm's model interface.

    Args:
        layers: ``(out_channels, pool)`` of each 3×3 convolution (``pool``: 2 = max-pool 2 after it).
        img_size: input height = width (the classifier is sized for the last map).
        num_classes: classifier outputs (0: no classifier, ``forward`` returns the flattened map).
        in_chans: input channels.
        width: multiplier of every convolution's width.
        drop_rate: dropout before the classifier.
        block: ``bn_relu`` or ``softhebb`` (the module docstring says more).
        head_norm: ``none``, or ``l2``: the flattened map scaled to unit mean square per image,
            z = √D · x / ‖x‖₂, before the dropout and classifier (what a linear probe with
            ``normalize: l2`` sees).

    Raises:
        ValueError: an unknown ``block`` or ``head_norm``, or ``img_size`` too small for the pools
            (SoftHebb's reflect padding also needs every convolved map at least 2×2).

    Examples:
        >>> import torch
        >>> net = HebbVGG([(8, 2), (16, 2)], img_size=8, num_classes=3, block="softhebb")
        >>> net(torch.randn(2, 3, 8, 8)).shape, net.head_hidden_size
        (torch.Size([2, 3]), 64)
    """

    def __init__(
        self,
        layers: list[tuple[int, int]],
        img_size: int = 32,
        num_classes: int = 1000,
        in_chans: int = 3,
        width: float = 1.0,
        drop_rate: float = 0.0,
        block: str = "bn_relu",
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        self._keep_head_options(block, BLOCKS, num_classes, drop_rate, head_norm)
        powers = [power for power, _, _ in softhebb_block_settings(len(layers))]
        modules: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        chans, size, reduction = in_chans, img_size, 1
        for i, (out, pool) in enumerate(layers):
            out = max(1, round(out * width))
            if size < (2 if block == "softhebb" else 1):
                raise ValueError(
                    f"img_size={img_size} is too small for these layers (a map shrinks to {size})"
                )
            if block == "softhebb":
                pooling = f"max_{pool}_{pool}_0" if pool else "none"
                modules.append(SoftHebbBlock(chans, out, 3, powers[i], pooling))
            else:
                modules += [
                    nn.Conv2d(chans, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                if pool:
                    modules.append(MaxPool2d(pool))
            size //= pool or 1
            reduction *= pool or 1
            self._end_layer(modules, out, reduction, size, img_size)
            chans = out
        self._keep_features(modules, chans, size)
        self.head_hidden_size = chans * size * size
        self.pre_logits = nn.Flatten(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self._classifier(num_classes)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return small_image_cfg(first_conv="features.0", classifier="classifier", **kwargs)


default_cfgs = generate_default_cfgs({"hebb_vgg11.untrained": _cfg()})


@register_model
def hebb_vgg11(pretrained: bool = False, **kwargs: Any) -> HebbVGG:
    """VGG11's convolutions for 32×32 inputs (CIFAR), the classifier on the flattened last map.

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`HebbVGG` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``block``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("hebb_vgg11", ...)``.
    """
    out_indices = kwargs.pop("out_indices", tuple(range(len(LAYERS["vgg11"]))))
    return build_model_with_cfg(
        HebbVGG,
        "hebb_vgg11",
        pretrained,
        layers=LAYERS["vgg11"],
        feature_cfg={"flatten_sequential": True, "out_indices": out_indices},
        **kwargs,
    )
