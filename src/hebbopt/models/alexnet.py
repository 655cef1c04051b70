"""The FastHebb papers' AlexNet-like networks as timm models: ``hebb_alexnet_6l``, ``hebb_alexnet_10l``.

Importing :mod:`hebbopt` registers them, so ``timm.create_model("hebb_alexnet_6l", num_classes=10)``
works. Every hidden layer is conv (no bias) → ReLU → [max-pool] → BatchNorm, as in the FastHebb
reference code; the last hidden layer is a Linear on the flattened map (the paper's conv on the
whole map, the same function) → ReLU → BatchNorm1d; the classifier is dropout → Linear.

``block="softhebb"`` builds the same geometry (layers, kernels, pools, widths, unpadded
convolutions, the hidden Linear) from SoftHebb's block instead (Journé et al., ICLR 2023):
BatchNorm(affine=False) → conv (no bias) → :class:`~hebbopt.models.softhebb.Triangle` → max-pool,
and BatchNorm1d(affine=False) → Linear → Triangle for the hidden Linear layer, each starting from
N(0, (25/√fan_in)²). The SoftHebb rule needs that block: fed by ReLU → BatchNorm layers it learns
features worse than random ones (docs/benchmarks.md). Each layer's triangle power and the rule's
per-layer temperature and learning rate (:data:`SOFTHEBB_BLOCK_HYPER`, used with
``pretrain.layer_defaults``) follow SoftHebb's deepest CIFAR-size preset, layer by layer.

| model     | hidden convolutions: out, k kernel, p pool        | input            | fc          |
|-----------|---------------------------------------------------|------------------|-------------|
| 6 layers  | 96k5p2 128k3 192k3p2 256k3                        | 32×32 (Fig. 2)   | 2304 → 4096 |
| 10 layers | 96k7p3 128k3 192k3p2 192k3 256k3p2 256k3 384k3p2 512k3 | 210×210 (Fig. 3) | 4608 → 4096 |
"""

from __future__ import annotations

from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from hebbopt.models.cfgs import small_image_cfg
from hebbopt.models.flat_head import FlatHeadNet
from hebbopt.models.softhebb import MaxPool2d, SoftHebbBlock, Triangle

LAYERS = {
    "6l": [(96, 5, 2), (128, 3, 0), (192, 3, 2), (256, 3, 0)],
    "10l": [
        (96, 7, 3),
        (128, 3, 0),
        (192, 3, 2),
        (192, 3, 0),
        (256, 3, 2),
        (256, 3, 0),
        (384, 3, 2),
        (512, 3, 0),
    ],
}
"""Hidden convolutions of each network: ``(out channels, kernel, max-pool after the ReLU (0 = none))``."""

BLOCKS = ("relu_bn", "softhebb")
"""The hidden-layer blocks :class:`HebbAlexNet` builds (``block=``)."""


def softhebb_block_settings(depth: int) -> list[tuple[float, float, float]]:
    """``(triangle power, SoftHebb's t_invert, SoftHebb's lr)`` of each hidden layer with
    ``block="softhebb"``, the hidden Linear layer last: the first layer as SoftHebb's first block
    (0.7, 1, 0.08), the second as its second (1.4, 0.65, 0.005), the middle ones as the third block of
    its 4-block preset (1.4, 0.45, 0.01) and the last two as its last block (1, 0.25, 0.01).

    Args:
        depth: the number of hidden layers (convolutions + 1).

    Returns:
        one triple per hidden layer.

    Examples:
        >>> softhebb_block_settings(5)[0], softhebb_block_settings(5)[-1]
        ((0.7, 1.0, 0.08), (1.0, 0.25, 0.01))
    """
    first, second, middle, last = (0.7, 1.0, 0.08), (1.4, 0.65, 0.005), (1.4, 0.45, 0.01), (1.0, 0.25, 0.01)
    return [first, second, *[middle] * max(0, depth - 4), last, last][:depth]


SOFTHEBB_BLOCK_HYPER: dict[str, dict[str, dict[str, float]]] = {
    f"hebb_alexnet_{name}": {
        **{
            f"features.{i}.conv": {"temperature": 1.0 / t_invert, "lr": lr}
            for i, (_, t_invert, lr) in enumerate(softhebb_block_settings(len(layers) + 1)[:-1])
        },
        "pre_logits.2": {
            "temperature": 1.0 / softhebb_block_settings(len(layers) + 1)[-1][1],
            "lr": softhebb_block_settings(len(layers) + 1)[-1][2],
        },
    }
    for name, layers in LAYERS.items()
}
"""The SoftHebb rule's per-layer ``temperature`` (1 / t_invert) and ``lr`` on the ``block="softhebb"``
networks, by layer name (the ReLU → BatchNorm networks have other names, so these never apply to them)."""


class HebbAlexNet(FlatHeadNet):
    """An AlexNet-like network of the FastHebb papers, with timm's model interface.

    Args:
        layers: ``(out_channels, kernel, pool)`` of each hidden convolution.
        img_size: input height = width (the hidden Linear layer is sized for it).
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pre-logits).
        in_chans: input channels.
        fc_dim: width of the hidden Linear layer.
        width: multiplier of every hidden width (convolutions and the Linear layer).
        drop_rate: dropout before the classifier.
        act_layer: activation after every hidden layer (a timm activation name) with
            ``block="relu_bn"``.
        block: ``relu_bn`` (conv → act → [max-pool] → BatchNorm, the FastHebb papers') or
            ``softhebb`` (BatchNorm(affine=False) → conv → Triangle → [max-pool], SoftHebb's; the
            module docstring says more).
        head_norm: ``none``, or ``l2``: the hidden Linear layer's output scaled to unit mean square
            per image, z = √D · x / ‖x‖₂, before the dropout and classifier (what a linear probe
            with ``normalize: l2`` sees).

    Raises:
        ValueError: ``img_size`` too small for the layers (a feature map would shrink below 1×1),
            an unknown ``block`` or ``head_norm``.

    Examples:
        >>> import torch
        >>> net = HebbAlexNet([(8, 5, 2), (16, 3, 0)], img_size=16, num_classes=3, fc_dim=32)
        >>> net(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        layers: list[tuple[int, int, int]],
        img_size: int = 32,
        num_classes: int = 1000,
        in_chans: int = 3,
        fc_dim: int = 4096,
        width: float = 1.0,
        drop_rate: float = 0.5,
        act_layer: str = "relu",
        block: str = "relu_bn",
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        self._keep_head_options(block, BLOCKS, num_classes, drop_rate, head_norm)
        act = get_act_layer(act_layer)
        powers = [power for power, _, _ in softhebb_block_settings(len(layers) + 1)]
        modules: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        chans, size, reduction = in_chans, img_size, 1
        for i, (out, kernel, pool) in enumerate(layers):
            out = max(1, round(out * width))
            size -= kernel - 1
            if block == "softhebb":
                pooling = f"max_{pool}_{pool}_0" if pool else "none"
                modules.append(SoftHebbBlock(chans, out, kernel, powers[i], pooling, same=False))
                size //= pool or 1
                reduction *= pool or 1
            else:
                modules += [nn.Conv2d(chans, out, kernel, bias=False), act(inplace=True)]
                if pool:
                    modules.append(MaxPool2d(pool))
                    size //= pool
                    reduction *= pool
                modules.append(nn.BatchNorm2d(out))
            self._end_layer(modules, out, reduction, size, img_size)
            chans = out
        self._keep_features(modules, chans, size)
        self.head_hidden_size = max(1, round(fc_dim * width))
        flat = chans * size * size
        if block == "softhebb":
            fc = nn.Linear(flat, self.head_hidden_size, bias=False)
            nn.init.normal_(fc.weight, 0.0, 25.0 / flat**0.5)
            self.pre_logits = nn.Sequential(
                nn.Flatten(1), nn.BatchNorm1d(flat, affine=False), fc, Triangle(powers[-1])
            )
        else:
            self.pre_logits = nn.Sequential(
                nn.Flatten(1),
                nn.Linear(flat, self.head_hidden_size, bias=False),
                act(inplace=True),
                nn.BatchNorm1d(self.head_hidden_size),
            )
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = self._classifier(num_classes)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return small_image_cfg(first_conv="features.0", classifier="classifier", **kwargs)


default_cfgs = generate_default_cfgs(
    {
        "hebb_alexnet_6l.untrained": _cfg(),
        "hebb_alexnet_10l.untrained": _cfg(
            num_classes=1000,
            input_size=(3, 210, 210),
            crop_pct=0.875,
            interpolation="bicubic",
            mean=IMAGENET_DEFAULT_MEAN,
            std=IMAGENET_DEFAULT_STD,
        ),
    }
)


def _create(variant: str, layers: str, pretrained: bool, **kwargs: Any) -> HebbAlexNet:
    img_size = kwargs.pop("img_size", 32 if layers == "6l" else 210)
    out_indices = kwargs.pop("out_indices", tuple(range(len(LAYERS[layers]))))
    return build_model_with_cfg(
        HebbAlexNet,
        variant,
        pretrained,
        layers=LAYERS[layers],
        img_size=img_size,
        feature_cfg={"flatten_sequential": True, "out_indices": out_indices},
        **kwargs,
    )


@register_model
def hebb_alexnet_6l(pretrained: bool = False, **kwargs: Any) -> HebbAlexNet:
    """The 6-layer network of FastHebb Fig. 2 (32×32 inputs: CIFAR, Tiny ImageNet at 32 px).

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`HebbAlexNet` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("hebb_alexnet_6l", ...)``.
    """
    return _create("hebb_alexnet_6l", "6l", pretrained, **kwargs)


@register_model
def hebb_alexnet_10l(pretrained: bool = False, **kwargs: Any) -> HebbAlexNet:
    """The 10-layer network of FastHebb Fig. 3 (210×210 ImageNet inputs).

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`HebbAlexNet` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("hebb_alexnet_10l", ...)``.
    """
    return _create("hebb_alexnet_10l", "10l", pretrained, **kwargs)
