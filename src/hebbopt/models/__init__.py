"""timm registrations of the FastHebb and SoftHebb networks and a CIFAR VGG (imported by
``import hebbopt``), and the per-layer Hebbian settings their papers give (:data:`LAYER_HYPER`)."""

from hebbopt.models.alexnet import SOFTHEBB_BLOCK_HYPER, HebbAlexNet, hebb_alexnet_6l, hebb_alexnet_10l
from hebbopt.models.softhebb import (
    SOFTHEBB_LAYER_HYPER,
    SoftHebbNet,
    Triangle,
    softhebb_3l,
    softhebb_4l,
    softhebb_5l,
)
from hebbopt.models.vgg import SOFTHEBB_VGG_HYPER, HebbVGG, hebb_vgg11

LAYER_HYPER: dict[tuple[str, str], dict[str, dict]] = {
    **{(model, "softhebb"): hyper for model, hyper in SOFTHEBB_LAYER_HYPER.items()},
    **{(model, "softhebb"): hyper for model, hyper in SOFTHEBB_BLOCK_HYPER.items()},
    **{(model, "softhebb"): hyper for model, hyper in SOFTHEBB_VGG_HYPER.items()},
}
"""The papers' per-layer hyper-parameters of a rule on a model: ``{(model, rule): {layer: {key: value}}}``.

A recipe with ``pretrain.layer_defaults`` gives each layer these values (as its param group) when
the pair is here, and nothing otherwise, so no recipe branches on a model's or a rule's name:
a network whose paper tuned a rule per layer registers its table here, beside the model."""


def layer_hyper(model: str, rule: str) -> dict[str, dict] | None:
    """The per-layer hyper-parameters the papers give for ``rule`` on ``model`` (:data:`LAYER_HYPER`).

    Args:
        model: a timm model name.
        rule: a rule name of :data:`hebbopt.rules.RULES`.

    Returns:
        ``{layer name: {hyper-parameter: value}}``, or None when the pair has no such table.

    Examples:
        >>> layer_hyper("softhebb_3l", "softhebb")["blocks.1.conv"]["lr"]
        0.005
        >>> layer_hyper("softhebb_3l", "hpca") is None
        True
    """
    return LAYER_HYPER.get((model, rule))


__all__ = [
    "LAYER_HYPER",
    "SOFTHEBB_BLOCK_HYPER",
    "SOFTHEBB_LAYER_HYPER",
    "SOFTHEBB_VGG_HYPER",
    "HebbAlexNet",
    "HebbVGG",
    "SoftHebbNet",
    "Triangle",
    "hebb_alexnet_6l",
    "hebb_alexnet_10l",
    "hebb_vgg11",
    "layer_hyper",
    "softhebb_3l",
    "softhebb_4l",
    "softhebb_5l",
]
