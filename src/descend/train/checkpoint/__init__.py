"""Checkpoints: the whole training state in one safetensors file, written atomically, read without pickle.

By concern: :mod:`.container` (the safetensors bytes, through the ``safetensors`` library), :mod:`.codec` (the
nested state <-> JSON structure + tensor table; :func:`save`, :func:`load`), :mod:`.weights` (plain model
weights: :func:`save_weights`, :func:`load_weights`) and :mod:`.validate` (a loaded state checked against a
trainer before anything reaches torch: :func:`check_state`).
"""

from .codec import FORMAT, VERSION, load, save
from .container import MAX_HEADER_BYTES, CheckpointError
from .validate import check_state
from .weights import WeightsReport, load_weights, save_weights

__all__ = [
    "FORMAT", "MAX_HEADER_BYTES", "VERSION", "CheckpointError", "WeightsReport", "check_state", "load",
    "load_weights", "save", "save_weights",
]  # fmt: skip
