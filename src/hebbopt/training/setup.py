"""A run's setup: its accelerator and its dataset."""

from __future__ import annotations

import warnings

import torch
from accelerate import Accelerator

from hebbopt.data import ImageSplits, load_dataset
from hebbopt.files import CorruptFileError
from hebbopt.training import precision
from hebbopt.training.config import Config, ConfigError
from hebbopt.training.tracking import accelerator_kwargs


def make_accelerator(cfg: Config) -> Accelerator:
    """The :class:`accelerate.Accelerator` of a run; sets torch's CPU threads when ``run.threads``.

    Args:
        cfg: the configuration; ``run.cpu`` and ``run.mixed_precision`` are passed on (a
            ``RuntimeWarning`` for bf16 on a device without bf16 units, where it is many times
            slower than float32), and ``run.log_with`` opens trackers
            (:func:`~hebbopt.training.tracking.accelerator_kwargs`).

    Returns:
        A new accelerator (the processes and devices come from ``accelerate launch``, if used).

    Raises:
        ConfigError: ``run.log_with`` names a tracker whose package is not installed.
    """
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    if warning := precision.slow_bf16(cfg.run.mixed_precision, cfg.run.cpu):
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    try:
        trackers = accelerator_kwargs(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return Accelerator(cpu=cfg.run.cpu, mixed_precision=cfg.run.mixed_precision, **trackers)


def load_splits(cfg: Config, accelerator: Accelerator) -> ImageSplits:
    """The configured dataset (``cfg.data``).

    The main process loads first, decoding and caching the images (and, for a streamed folder,
    checking that every image of both splits decodes, before any training), with progress bars when
    ``run.progress``; the other processes then read the caches.

    Args:
        cfg: the configuration.
        accelerator: the run's accelerator.

    Returns:
        The splits, as :func:`~hebbopt.data.datasets.load_dataset` returns them.

    Raises:
        ConfigError: the data cannot be used as configured (e.g. train and test classes differ, an
            empty class folder, images of different sizes), named.
        CorruptFileError: an image that does not decode, or a damaged or edited cache file (named).
        FileNotFoundError: a torchvision CIFAR file is missing (named).
        FloatingPointError: the training split's statistics are not finite.
    """
    kwargs = dict(
        img_size=cfg.data.img_size,
        in_memory=cfg.data.in_memory,
        download=cfg.data.download,
        cache=cfg.data.cache,
        synthetic_size=cfg.data.synthetic_size,
    )
    with accelerator.main_process_first():
        try:
            main = accelerator.is_main_process
            return load_dataset(
                cfg.data.name, cfg.data.root, verbose=main, progress=main and cfg.run.progress, **kwargs
            )
        except CorruptFileError:
            raise
        except ValueError as e:  # missing or mismatched class folders, images of different sizes
            raise ConfigError(f"data: {e}") from None
