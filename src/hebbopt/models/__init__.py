"""timm registrations of the FastHebb networks (imported by ``import hebbopt``)."""

from hebbopt.models.alexnet import HebbAlexNet, hebb_alexnet_6l, hebb_alexnet_10l

__all__ = ["HebbAlexNet", "hebb_alexnet_6l", "hebb_alexnet_10l"]
