"""The training loop, its callbacks, metrics and checkpoint state."""

from .history import History
from .trainer import Trainer

__all__ = ["History", "Trainer"]
