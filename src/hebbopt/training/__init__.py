"""The recipes' engine: configuration, run folders, the epoch loop, pre-training (Hebbian, VAE),
fine-tuning. The sweep over starts, labelled shares and seeds is :mod:`hebbopt.sweeps` (above this
package and :mod:`hebbopt.evaluation`).

The scripts in ``recipes/`` are thin command lines over these functions; each can also be called
from Python with a :class:`~hebbopt.training.config.Config`.

The recipes need the ``recipes`` extra (``pip install 'hebbopt[recipes]'``: accelerate, PyYAML,
tqdm, jsonargparse, scikit-learn, matplotlib, TensorBoard); the core package (the optimizers) does not.
"""

try:
    import accelerate  # noqa: F401
    import jsonargparse  # noqa: F401
    import tqdm  # noqa: F401
    import yaml  # noqa: F401
except ImportError as e:  # a core install: say which extra brings the recipes' dependencies
    raise ImportError(
        f"hebbopt.training (the recipes) needs the recipes extra ({e}): pip install 'hebbopt[recipes]'"
    ) from e

from hebbopt.training.config import Config, ConfigError, load
from hebbopt.training.finetune import finetune
from hebbopt.training.pretrain import pretrain

__all__ = ["Config", "ConfigError", "finetune", "load", "pretrain"]
