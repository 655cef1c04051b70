"""hebbopt: Hebbian learning (soft-WTA, Hebbian PCA) as drop-in ``torch.optim`` optimizers."""

from hebbopt import models
from hebbopt.filters import filter_grid, save_filters
from hebbopt.named import BCMHebb, HPCAHebb, KrotovHebb, OjaHebb, SoftHebb, SoftWTAHebb
from hebbopt.optimizer import HebbianOptimizer
from hebbopt.rules import RULES
from hebbopt.selection import hebbian_layers
from hebbopt.weights import load_weights, save_weights

__version__ = "0.1.0"
__all__ = [
    "RULES",
    "BCMHebb",
    "HPCAHebb",
    "HebbianOptimizer",
    "KrotovHebb",
    "OjaHebb",
    "SoftHebb",
    "SoftWTAHebb",
    "filter_grid",
    "hebbian_layers",
    "load_weights",
    "models",
    "save_filters",
    "save_weights",
]
