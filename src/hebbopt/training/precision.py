"""Which autocast dtype pays on this machine: ``run.mixed_precision: auto``, and a warning for bf16
where the hardware has no bf16 units.

Without AVX-512 BF16 or AMX, a CPU runs bf16 convolutions and matrix products through conversions
to float32: measured on a 2-core AVX2 EPYC, a training step of ``hebb_vgg11`` at batch 64 took
15.5 s under bf16 autocast against 0.78 s in float32 (20× slower); on a CPU with AVX-512 BF16 the
same step is about 1.7× faster in bf16 than in float32.
"""

from __future__ import annotations

import torch


def bf16_units(device_type: str) -> bool:
    """Whether ``device_type`` computes in bf16 natively.

    Args:
        device_type: ``"cuda"`` or ``"cpu"``.

    Returns:
        For CUDA, ``torch.cuda.is_bf16_supported()``; for the CPU, whether it has AVX-512 BF16 or
        AMX tiles (True where this torch cannot tell).
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, since torch 2.3
    checks = [c for name in names if (c := getattr(torch.cpu, name, None)) is not None]
    return not checks or any(c() for c in checks)


def device_type(cpu: bool) -> str:
    """The device a run uses.

    Args:
        cpu: ``run.cpu``.

    Returns:
        ``"cpu"`` with ``run.cpu`` or without CUDA, else ``"cuda"``.
    """
    return "cpu" if cpu or not torch.cuda.is_available() else "cuda"


def resolve(mixed_precision: str, cpu: bool) -> str:
    """``run.mixed_precision`` as accelerate takes it: ``auto`` becomes ``bf16`` where the device
    has bf16 units (:func:`bf16_units`), else ``no``; other values are kept.

    Args:
        mixed_precision: ``no``, ``bf16``, ``fp16`` or ``auto``.
        cpu: ``run.cpu``.

    Returns:
        ``no``, ``bf16`` or ``fp16``.

    Examples:
        >>> resolve("fp16", cpu=True)
        'fp16'
    """
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if bf16_units(device_type(cpu)) else "no"


def slow_bf16(mixed_precision: str, cpu: bool) -> str | None:
    """What to tell a user who asks for bf16 on a device without bf16 units, None otherwise.

    Args:
        mixed_precision: the resolved ``run.mixed_precision``.
        cpu: ``run.cpu``.

    Returns:
        The warning's text, or None.
    """
    device = device_type(cpu)
    if mixed_precision != "bf16" or bf16_units(device):
        return None
    unit = "AVX-512 BF16 or AMX" if device == "cpu" else "bf16 support"
    return (
        f"run.mixed_precision: bf16 on a {device} without {unit}: bf16 is emulated there, many times "
        "slower than float32 (a VGG11 training step measured 20× slower); set run.mixed_precision: no, "
        "or auto (bf16 only where it pays)"
    )
