"""Hebbian rules as pure functions: ``statistics(x, u, W, geometry, ...)`` → sums, ``update``."""

from hebbopt.rules import hpca, swta
from hebbopt.rules.geometry import Conv2dGeometry

__all__ = ["Conv2dGeometry", "hpca", "swta"]
