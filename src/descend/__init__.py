"""descend: train deep neural networks the way the lectures teach it — every technique built in and verified."""

__version__ = "0.1.0"

from . import averaging, callbacks, data, models, optim, regularization, schedules  # noqa: E402
from .errors import DivergenceError, UserError  # noqa: E402
from .train import Trainer  # noqa: E402

__all__ = ["Trainer", "UserError", "DivergenceError", "averaging", "callbacks", "data", "models", "optim",
           "regularization", "schedules", "__version__"]
