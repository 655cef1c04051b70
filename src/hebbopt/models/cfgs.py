"""timm ``pretrained_cfg`` entries of hebbopt's networks (no hosted weights: ``url`` is empty)."""

from __future__ import annotations

from typing import Any

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def small_image_cfg(*, first_conv: str, classifier: str, **kwargs: Any) -> dict[str, Any]:
    """A network's timm configuration for 32×32 CIFAR-10 inputs, with ``kwargs`` overriding any key.

    Args:
        first_conv: the name of the first convolution (timm's ``first_conv``).
        classifier: the name of the classifier module.
        **kwargs: other keys, or overrides (``num_classes``, ``input_size``, ``mean``, ``std``, ...).

    Returns:
        the configuration dict ``generate_default_cfgs`` takes.

    Examples:
        >>> small_image_cfg(first_conv="features.0", classifier="head")["input_size"]
        (3, 32, 32)
    """
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": first_conv,
        "classifier": classifier,
        "license": "mit",
        **kwargs,
    }
