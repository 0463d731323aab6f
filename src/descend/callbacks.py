"""``descend.callbacks``: the callbacks a user hangs on the trainer (re-exports)."""

from .train.callbacks import Callback, EarlyStopping
from .train.logs import MetricsFile, ProgressBar, TensorBoard

__all__ = ["Callback", "EarlyStopping", "MetricsFile", "ProgressBar", "TensorBoard"]
