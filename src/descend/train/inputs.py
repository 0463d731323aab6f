"""Data as Keras users pass it to ``fit``: ``trainer.fit(X, y, validation_split=0.1)``.

:meth:`descend.Trainer.fit` takes ``(x, y)`` pairs, :class:`~descend.data.Split` objects and DataLoaders; this module
turns Keras' ``fit(x, y)`` (inputs and targets as two arguments: numpy arrays, tensors, pandas frames) into a pair,
and ``validation_split`` into a validation pair taken from the *last* rows, before any shuffling, as Keras does
(``keras.Model.fit``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError


def is_array(value: Any) -> bool:
    """Whether ``value`` is one array of rows (numpy, torch, pandas), as opposed to an ``(x, y)`` pair or a split."""
    return isinstance(value, (np.ndarray, torch.Tensor)) or (hasattr(value, "to_numpy") and hasattr(value, "shape"))


def _rows(value: Any) -> Any:
    return value.to_numpy() if hasattr(value, "to_numpy") and not isinstance(value, np.ndarray) else value


def data_pairs(train: Any, val: Any, validation_split: float | None) -> tuple[Any, Any]:
    """``(train, val)`` as ``fit`` takes them, from ``fit(x, y)`` and ``validation_split`` (a fraction in (0, 1));
    ``evaluate(x, y)`` likewise, without a split."""
    if is_array(train):  # fit(X, y): the second argument holds the targets, not validation data
        if not is_array(val):
            raise UserError(
                "got the inputs as an array without targets: pass the targets as the second argument, "
                "fit(x, y) or evaluate(x, y), or pairs: fit((x, y), (x_val, y_val))"
            )
        train, val = (_rows(train), _rows(val)), None
    if validation_split is None or validation_split == 0:
        return train, val
    if (
        not isinstance(validation_split, (int, float))
        or isinstance(validation_split, bool)
        or not 0 < validation_split < 1
    ):
        raise UserError(f"validation_split must be a fraction between 0 and 1, got {validation_split!r}")
    if val is not None:
        raise UserError("fit got validation data and validation_split: pass one of them")
    if not (isinstance(train, (tuple, list)) and len(train) == 2 and all(is_array(a) for a in train)):
        raise UserError(
            "validation_split takes the last rows of (x, y) arrays; for a Split or a DataLoader, "
            "pass the validation data as fit's second argument"
        )
    x, y = (_rows(a) for a in train)
    if len(x) != len(y):
        raise UserError(f"x has {len(x)} rows but y has {len(y)}")
    cut = int(len(x) * (1 - validation_split))  # Keras' rule: the last rows, before shuffling
    if cut < 1 or cut >= len(x):
        raise UserError(
            f"validation_split={validation_split} of {len(x)} rows leaves an empty training or validation part"
        )
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])
