"""``descend.callbacks``: the callbacks a user hangs on the trainer (re-exports)."""

from .averaging import EMA, SWA, WeightAveraging
from .train.callbacks import Callback, EarlyStopping, ModelCheckpoint
from .train.logs import MetricsFile, ProgressBar, TensorBoard

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "EMA", "SWA", "WeightAveraging", "MetricsFile",
           "ProgressBar", "TensorBoard"]
