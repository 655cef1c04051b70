"""The recipes' engine: configuration, pre-training (Hebbian, VAE), fine-tuning, the sweep.

The scripts in ``recipes/`` are thin command lines over these functions; each can also be called
from Python with a :class:`~hebbopt.training.config.Config`.
"""

from hebbopt.training.config import Config, ConfigError, load
from hebbopt.training.finetune import finetune
from hebbopt.training.pretrain import pretrain
from hebbopt.training.semisup import semisup

__all__ = ["Config", "ConfigError", "finetune", "load", "pretrain", "semisup"]
