"""timm registrations of the FastHebb and SoftHebb networks (imported by ``import hebbopt``)."""

from hebbopt.models.alexnet import HebbAlexNet, hebb_alexnet_6l, hebb_alexnet_10l
from hebbopt.models.softhebb import (
    SOFTHEBB_LAYER_HYPER,
    SoftHebbNet,
    Triangle,
    softhebb_3l,
    softhebb_4l,
    softhebb_5l,
)

__all__ = [
    "SOFTHEBB_LAYER_HYPER",
    "HebbAlexNet",
    "SoftHebbNet",
    "Triangle",
    "hebb_alexnet_6l",
    "hebb_alexnet_10l",
    "softhebb_3l",
    "softhebb_4l",
    "softhebb_5l",
]
