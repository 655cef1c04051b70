"""hebbopt: Hebbian learning (soft-WTA, Hebbian PCA) as drop-in ``torch.optim`` optimizers."""

from hebbopt.optimizer import HebbianOptimizer, HPCAHebb, SoftWTAHebb
from hebbopt.selection import hebbian_layers

__version__ = "0.1.0"
__all__ = ["HPCAHebb", "HebbianOptimizer", "SoftWTAHebb", "hebbian_layers"]
