"""The SoftHebb networks as timm models: ``softhebb_3l``, ``softhebb_4l``, ``softhebb_5l``.

Journé, Rodriguez, Guo, Moraitis, "Hebbian deep learning without feedback" (ICLR 2023); reference
code github.com/NeuromorphicComputing/SoftHebb. Importing :mod:`hebbopt` registers the models, so
``timm.create_model("softhebb_3l", num_classes=10)`` works.

Every hidden block is BatchNorm2d(affine=False) → Conv2d (no bias, reflect padding of k // 2, so
the map keeps its size) → :class:`Triangle` activation → pool; the head is flatten → dropout
(``drop_rate``, default 0.5) → Linear (``head``). Each block is 4× wider than the one before.

| model         | input   | blocks (channels)          | last map       | flat features |
|---------------|---------|----------------------------|----------------|---------------|
| `softhebb_3l` | 32×32   | 96-384-1536                | 1536 × 4 × 4   | 24,576        |
| `softhebb_4l` | 96×96   | 96-384-1536-6144           | 6144 × 6 × 6   | 221,184       |
| `softhebb_5l` | 160×160 | 48-192-768-3072-12288      | 12288 × 5 × 5  | 307,200       |

Blocks as out channels, k kernel, ^triangle power, pool kind kernel/stride/padding:

- ``softhebb_3l``: 96k5^0.7 max4/2/1, 384k3^1.4 max4/2/1, 1536k3^1 avg2/2/0.
- ``softhebb_4l``: 96k5^0.7 avg4/2/1, 384k3^0.7 max4/2/1, 1536k3^1.4 avg4/2/1, 6144k3^1 avg2/2/0.
- ``softhebb_5l``: 48k5^0.7 max4/2/1, 192k3^0.7 max4/2/1, 768k3^0.7 max4/2/1, 3072k3^1.4 max4/2/1,
  12288k3^1 avg2/2/0.

Where each number comes from (presets.json and demo.py of the reference code, commit f5c11aa):

- ``softhebb_3l``: ``demo.py`` ``DeepSoftHebb`` (CIFAR-10), identical to the preset
  ``4SoftHebbCnnCIFAR`` (the presets count the classifier as a block): kernels, triangle powers,
  pools, ``t_invert`` 1 / 0.65 / 0.25 and learning rates 0.08 / 0.005 / 0.01.
- ``softhebb_4l``: preset ``5SoftHebbCnnSTL`` (STL-10, 96 px): kernels 5/3/3/3, powers 0.7/0.7/1.4/1
  (its last ``"triangle"`` has no power: 1, the reference ``Triangle``'s default), pools
  avg/max/avg 4/2/1 then avg 2/2/0, ``t_invert`` 1 / 0.65 / 0.45 / 0.25, learning rates
  0.08 / 0.005 / 0.01 / 0.01, dropout 0.5.
- ``softhebb_5l``: preset ``6SoftHebbCnnImNet`` (ImageNet at 160 px, the dataset preset
  ``1160``): kernels 5/3/3/3/3, powers 0.7/0.7/0.7/1.4/1, pools max 4/2/1 ×4 then avg 2/2/0,
  ``t_invert`` 1.1 / 0.7 / 0.5 / 0.4 / 0.25, learning rates 0.08 / 0.01 / 0.01 / 0.01 / 0.01,
  dropout 0.5.
- Widths 96-384-1536-6144 (STL-10) and 48-192-768-3072-12288 (ImageNet): the paper, and the same
  presets. The weight initialisation N(0, (25/√fan_in)²): ``demo.py`` ``SoftHebbConv2d``.

The classifier keeps PyTorch's default Linear initialisation (``demo.py`` draws it uniform in
[0, 0.11)). The input statistics of the ``pretrained_cfg`` are mean 0 and std 1 (pixels in [0, 1],
as the reference code feeds them): the first BatchNorm normalises the input channels anyway.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from timm.layers import to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn
from torch.nn import functional as F

from hebbopt.models.cfgs import small_image_cfg
from hebbopt.models.features import take_indices


class SoftHebbLayer(NamedTuple):
    """One hidden block of a SoftHebb network, with its Hebbian hyper-parameters.

    Attributes:
        out: output channels (before the ``width`` multiplier).
        kernel: convolution kernel size (odd; padding ``kernel // 2`` keeps the map size).
        power: exponent of the :class:`Triangle` activation.
        pool: ``"max_k_s_p"`` or ``"avg_k_s_p"`` (kernel, stride, padding), as in presets.json.
        t_invert: SoftHebb's inverse softmax temperature (the temperature is ``1 / t_invert``).
        lr: SoftHebb's learning rate of the layer.
    """

    out: int
    kernel: int
    power: float
    pool: str
    t_invert: float
    lr: float


SOFTHEBB_LAYERS: dict[str, list[SoftHebbLayer]] = {
    "softhebb_3l": [
        SoftHebbLayer(96, 5, 0.7, "max_4_2_1", 1.0, 0.08),
        SoftHebbLayer(384, 3, 1.4, "max_4_2_1", 0.65, 0.005),
        SoftHebbLayer(1536, 3, 1.0, "avg_2_2_0", 0.25, 0.01),
    ],
    "softhebb_4l": [
        SoftHebbLayer(96, 5, 0.7, "avg_4_2_1", 1.0, 0.08),
        SoftHebbLayer(384, 3, 0.7, "max_4_2_1", 0.65, 0.005),
        SoftHebbLayer(1536, 3, 1.4, "avg_4_2_1", 0.45, 0.01),
        SoftHebbLayer(6144, 3, 1.0, "avg_2_2_0", 0.25, 0.01),
    ],
    "softhebb_5l": [
        SoftHebbLayer(48, 5, 0.7, "max_4_2_1", 1.1, 0.08),
        SoftHebbLayer(192, 3, 0.7, "max_4_2_1", 0.7, 0.01),
        SoftHebbLayer(768, 3, 0.7, "max_4_2_1", 0.5, 0.01),
        SoftHebbLayer(3072, 3, 1.4, "max_4_2_1", 0.4, 0.01),
        SoftHebbLayer(12288, 3, 1.0, "avg_2_2_0", 0.25, 0.01),
    ],
}
"""The hidden blocks of each registered model, in order (the module docstring says from where)."""

SOFTHEBB_LAYER_HYPER: dict[str, dict[str, dict[str, float]]] = {
    model: {
        f"blocks.{i}.conv": {"temperature": 1.0 / layer.t_invert, "lr": layer.lr}
        for i, layer in enumerate(layers)
    }
    for model, layers in SOFTHEBB_LAYERS.items()
}
"""The paper's per-layer Hebbian hyper-parameters: ``{model: {conv layer name: {temperature, lr}}}``.

``temperature`` is ``1 / t_invert`` (SoftHebb's softmax is over ``u · t_invert``, i.e. ``u / T``),
``lr`` the layer's learning rate in the reference code (there it is further scaled per neuron by
``|‖w_n‖ − 1|^0.5``). The names are the convolutions of the model (``blocks.0.conv``, ...), so a
recipe turns them into param groups, e.g. for ``softhebb_3l``: ``blocks.0.conv`` T = 1, lr 0.08;
``blocks.1.conv`` T = 1/0.65, lr 0.005; ``blocks.2.conv`` T = 4, lr 0.01::

    groups = [{"modules": [model.get_submodule(name)], **hyper}
              for name, hyper in SOFTHEBB_LAYER_HYPER["softhebb_3l"].items()]
"""


class Triangle(nn.Module):
    """SoftHebb's triangle activation: ``relu(u − mean over channels(u)) ** power``.

    The mean is taken over dimension 1 (channels) at every position and image. Unlike the
    reference code (which subtracts a detached mean), gradients flow through the mean too; the
    forward value is the same.

    Args:
        power: exponent applied after the ReLU (1: the plain triangle).
        inplace: accepted for timm's activation interface; the input is never modified.

    Examples:
        >>> import torch
        >>> Triangle(power=2.0)(torch.tensor([[1.0, 3.0]])).tolist()
        [[0.0, 1.0]]
    """

    def __init__(self, power: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.power = power
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The ReLU in place on the fresh difference: one map-sized buffer instead of two (measured
        # on 2 CPU cores for a 64×1536×16×16 map: 647 ms → 47 ms; fresh pages are what costs).
        y = F.relu(x - x.mean(dim=1, keepdim=True), inplace=True)
        if self.power == 1:
            return y
        return y.pow(self.power) if torch.is_grad_enabled() and y.requires_grad else y.pow_(self.power)

    def extra_repr(self) -> str:
        """The power, shown when the module is printed.

        Returns:
            ``"power=..."``.
        """
        return f"power={self.power}"


def _register_triangle() -> None:
    """Make ``timm.layers.get_act_layer("triangle")`` return :class:`Triangle` (if timm allows)."""
    try:
        from timm.layers.create_act import _ACT_LAYER_DEFAULT
    except ImportError:  # pragma: no cover - a timm without the private table
        return
    _ACT_LAYER_DEFAULT.setdefault("triangle", Triangle)


_register_triangle()


def scale_l2(x: torch.Tensor) -> torch.Tensor:
    """Each row of a B×D matrix scaled to unit mean square: z = √D · x / ‖x‖₂ (``head_norm="l2"``).

    Args:
        x: B×D features.

    Returns:
        the scaled features (a row of zeros stays zero).

    Examples:
        >>> scale_l2(torch.tensor([[3.0, 4.0]])).pow(2).mean().item()
        1.0
    """
    return x * (x.shape[1] ** 0.5 / x.norm(dim=1, keepdim=True).clamp_min(1e-12))


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools an N×C×H×W map on the CPU through a channels-last copy when no
    gradient is recorded (Hebbian forward passes, feature extraction): the same values (a maximum
    is exact), several times faster there. Measured on 2 threads (Xeon), 4×4 windows, stride 2,
    batch 10: 96×32×32 maps 4.4 → 0.3 ms pooling alone; ``softhebb_3l``'s two pools were 9 of
    the 84 ms of a float32 Hebbian step. Under autograd, ``torch.compile``, other devices and
    other layouts it is ``nn.MaxPool2d`` itself, so training is unchanged to the bit.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = (
            x.device.type == "cpu"
            and x.dim() == 4
            and not self.return_indices
            and not (x.requires_grad and torch.is_grad_enabled())
            and not torch.compiler.is_compiling()
            and x.is_contiguous()
        )
        if fast:
            return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return super().forward(x)


def _pool(spec: str) -> tuple[nn.Module, int, int, int]:
    if spec == "none":
        return nn.Identity(), 1, 1, 0
    kind, kernel, stride, padding = spec.split("_")
    k, s, p = int(kernel), int(stride), int(padding)
    pool = MaxPool2d(k, s, p) if kind == "max" else nn.AvgPool2d(k, s, p)
    return pool, k, s, p


class SoftHebbBlock(nn.Module):
    """BatchNorm2d(affine=False) → Conv2d (reflect padding, no bias) → Triangle → pool.

    The convolution starts from N(0, (25/√fan_in)²), fan_in = in_chs · k · k, as SoftHebb does.

    Args:
        in_chs: input channels.
        out_chs: output channels (convolution filters).
        kernel: kernel size; with ``same`` padding it must be odd (padding ``kernel // 2``, the map
            keeps its size).
        power: exponent of the :class:`Triangle` activation.
        pool: ``"max_k_s_p"`` or ``"avg_k_s_p"``; ``"none"``: no pooling.
        same: reflect-pad by ``kernel // 2`` (SoftHebb's networks); False: no padding, the map
            shrinks by ``kernel − 1`` (the AlexNet-like networks' geometry).

    Raises:
        ValueError: an even kernel with ``same`` padding, or a pool kind other than ``max``/``avg``/``none``.
    """

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int, power: float, pool: str, same: bool = True
    ) -> None:
        super().__init__()
        if same and kernel % 2 == 0:
            raise ValueError(f"kernel must be odd for 'same' padding, got {kernel}")
        if pool != "none" and pool.split("_")[0] not in ("max", "avg"):
            raise ValueError(f"pool must be 'max_k_s_p', 'avg_k_s_p' or 'none', got {pool!r}")
        self.norm = nn.BatchNorm2d(in_chs, affine=False)
        self.shrink = 0 if same else kernel - 1
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel, padding=kernel // 2 if same else 0, padding_mode="reflect", bias=False
        )
        nn.init.normal_(self.conv.weight, 0.0, 25.0 / math.sqrt(in_chs * kernel * kernel))
        self.act = Triangle(power)
        self.pool, self.pool_kernel, self.pool_stride, self.pool_padding = _pool(pool)

    def out_size(self, size: int) -> int:
        """The side of the output map for an input side ``size``.

        Args:
            size: input height or width.

        Returns:
            the pooled output height or width (a ``same`` convolution keeps the size).
        """
        size -= self.shrink
        return (size + 2 * self.pool_padding - self.pool_kernel) // self.pool_stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(self.norm(x))))


class SoftHebbNet(nn.Module):
    """A SoftHebb network (Journé et al., ICLR 2023) with timm's model interface.

    Args:
        layers: the hidden blocks (see :data:`SOFTHEBB_LAYERS`).
        img_size: input size (int or ``(height, width)``); the classifier is sized for it.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns the flat features).
        in_chans: input channels.
        width: multiplier of every block's channels (at least 1 channel each).
        drop_rate: dropout before the classifier.
        head_norm: ``none``, or ``l2``: the flat features scaled to unit mean square per image,
            z = √D · x / ‖x‖₂, before the dropout and classifier (what a linear probe with
            ``normalize: l2`` sees; fine-tuning keeps the scale of the logits whatever the
            backbone's weight norms).

    Raises:
        ValueError: ``head_norm`` is not ``none`` or ``l2``; ``img_size`` too small for the blocks (a
            map would shrink below 2 pixels before a reflect-padded convolution, or below 1 after a
            pool).

    Examples:
        >>> import torch
        >>> net = SoftHebbNet(SOFTHEBB_LAYERS["softhebb_3l"], img_size=32, num_classes=3, width=1 / 16)
        >>> net.num_features, net(torch.randn(2, 3, 32, 32)).shape
        (1536, torch.Size([2, 3]))
    """

    def __init__(
        self,
        layers: list[SoftHebbLayer],
        img_size: int | tuple[int, int] = 32,
        num_classes: int = 10,
        in_chans: int = 3,
        width: float = 1.0,
        drop_rate: float = 0.5,
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        if head_norm not in ("none", "l2"):
            raise ValueError(f"head_norm must be 'none' or 'l2', got {head_norm!r}")
        self.head_norm = head_norm
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        height, wide = to_2tuple(img_size)
        blocks: list[SoftHebbBlock] = []
        self.feature_info: list[dict[str, Any]] = []
        chans, reduction = in_chans, 1
        for i, layer in enumerate(layers):
            out = max(1, round(layer.out * width))
            block = SoftHebbBlock(chans, out, layer.kernel, layer.power, layer.pool)
            if min(height, wide) <= layer.kernel // 2:
                raise ValueError(
                    f"img_size={img_size} is too small: block {i} sees a {height}×{wide} map, too small "
                    f"for reflect padding of {layer.kernel // 2}"
                )
            height, wide = block.out_size(height), block.out_size(wide)
            if min(height, wide) < 1:
                raise ValueError(f"img_size={img_size} is too small: block {i} pools the map to nothing")
            reduction *= block.pool_stride
            blocks.append(block)
            chans = out
            self.feature_info.append({"num_chs": out, "reduction": reduction, "module": f"blocks.{i}"})
        self.blocks = nn.Sequential(*blocks)
        self.map_size = (height, wide)
        self.num_features = self.head_hidden_size = chans * height * wide
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._classifier(num_classes)

    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The final Linear layer (what Hebbian optimizers leave out).

        Returns:
            ``self.head`` (``nn.Identity`` when ``num_classes=0``).
        """
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` outputs (0: none). There is no global pooling.

        Args:
            num_classes: outputs of the new classifier (0: ``nn.Identity``).
            global_pool: must be empty (accepted for timm compatibility).

        Raises:
            ValueError: ``global_pool`` is given.
        """
        if global_pool:
            raise ValueError("SoftHebbNet has no global pooling (the classifier sees the whole map)")
        self.num_classes = num_classes
        self.head = self._classifier(num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled map of the last block, B×C×h×w.

        Args:
            x: images, B×in_chans×H×W (the configured ``img_size`` for the classifier to fit).

        Returns:
            the output of the last block (after its pool).
        """
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Flatten (and scale, with ``head_norm="l2"``), then (unless ``pre_logits``) dropout and
        the classifier.

        Args:
            x: the output of :meth:`forward_features`.
            pre_logits: return the flat features (B×num_features) instead of the logits.

        Returns:
            B×num_classes logits, or B×num_features flat features.
        """
        x = torch.flatten(x, 1)
        if self.head_norm == "l2":
            x = scale_l2(x)
        return x if pre_logits else self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The output of each block (after its pool), as timm models give them.

        Args:
            x: images.
            indices: the last n blocks if an int, these blocks if a list, all if None.
            norm: ignored (there is no final norm layer; accepted for timm compatibility).
            stop_early: stop after the last requested block.
            output_fmt: must be ``"NCHW"``.
            intermediates_only: return only the intermediates.

        Returns:
            the intermediates, or ``(last feature map, intermediates)``.

        Raises:
            ValueError: ``output_fmt`` is not ``"NCHW"``.
        """
        if output_fmt != "NCHW":
            raise ValueError("output_fmt must be 'NCHW'")
        take, max_index = take_indices(len(self.blocks), indices)
        end = max_index if stop_early else len(self.blocks) - 1
        intermediates = []
        for i, block in enumerate(self.blocks[: end + 1]):
            x = block(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last requested intermediate (and the head if asked).

        Args:
            indices: as in :meth:`forward_intermediates`.
            prune_norm: ignored (there is no final norm layer).
            prune_head: also remove the classifier.

        Returns:
            the indices of the kept intermediates.
        """
        take, max_index = take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_head or max_index < len(self.feature_info) - 1:
            self.reset_classifier(0)
        return take


def _cfg(**kwargs: Any) -> dict[str, Any]:
    # SoftHebb's networks see images on the 0–1 scale: their first BatchNorm normalises them
    return small_image_cfg(
        first_conv="blocks.0.conv",
        classifier="head",
        **{"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), **kwargs},
    )


default_cfgs = generate_default_cfgs(
    {
        "softhebb_3l.untrained": _cfg(),
        "softhebb_4l.untrained": _cfg(input_size=(3, 96, 96)),
        "softhebb_5l.untrained": _cfg(
            num_classes=1000, input_size=(3, 160, 160), crop_pct=0.875, interpolation="bicubic"
        ),
    }
)

_IMG_SIZE = {"softhebb_3l": 32, "softhebb_4l": 96, "softhebb_5l": 160}


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SoftHebbNet:
    img_size = kwargs.pop("img_size", _IMG_SIZE[variant])
    layers = SOFTHEBB_LAYERS[variant]
    out_indices = kwargs.pop("out_indices", tuple(range(len(layers))))
    return build_model_with_cfg(
        SoftHebbNet,
        variant,
        pretrained,
        layers=layers,
        img_size=img_size,
        feature_cfg={"flatten_sequential": True, "out_indices": out_indices},
        **kwargs,
    )


@register_model
def softhebb_3l(pretrained: bool = False, **kwargs: Any) -> SoftHebbNet:
    """SoftHebb's 3-block CIFAR network (32×32 inputs; 96-384-1536 channels, 24,576 flat features).

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`SoftHebbNet` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("softhebb_3l", ...)``.
    """
    return _create("softhebb_3l", pretrained, **kwargs)


@register_model
def softhebb_4l(pretrained: bool = False, **kwargs: Any) -> SoftHebbNet:
    """SoftHebb's 4-block STL-10 network (96×96 inputs; 96-384-1536-6144 channels).

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`SoftHebbNet` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("softhebb_4l", ...)``.
    """
    return _create("softhebb_4l", pretrained, **kwargs)


@register_model
def softhebb_5l(pretrained: bool = False, **kwargs: Any) -> SoftHebbNet:
    """SoftHebb's 5-block ImageNet network (160×160 inputs; 48-192-768-3072-12288 channels).

    At full width the last convolution alone has 340 M weights (1.4 GB in float32); pass
    ``width`` < 1 for a smaller network.

    Args:
        pretrained: load weights from the ``pretrained_cfg`` (there is no hosted file: pass
            ``pretrained_cfg_overlay=dict(file=...)``, see :func:`hebbopt.save_weights`).
        **kwargs: :class:`SoftHebbNet` arguments and timm's (``num_classes``, ``in_chans``,
            ``drop_rate``, ``width``, ``img_size``, ``features_only``, ...).

    Returns:
        the model; usually made by ``timm.create_model("softhebb_5l", ...)``.
    """
    return _create("softhebb_5l", pretrained, **kwargs)
