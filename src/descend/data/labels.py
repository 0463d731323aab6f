"""Class labels that are not the indices ``0 .. K-1``: text labels in a CSV file (``"setosa"``, ``"red"``).

:func:`encode` maps them to indices in sorted order and returns the mapping; the run directory saves it
(``inference.json``), so :func:`descend.load_run` gives predictions back as the original labels (:func:`decode`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from descend.errors import UserError

#: whole-number targets in [0, this) are read as class labels 0..K-1
MAX_INFERRED_CLASSES = 100
#: an inferred classification with this many distinct labels is announced (it may be a regression)
ANNOUNCED_CLASSES = 20


def encode(y: np.ndarray, labels: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """``(codes, labels)``: int64 indices into ``labels`` (sorted unique values of ``y`` when not given).

    With ``labels`` given (a saved mapping), a value outside it is an error naming the value and the labels.
    """
    values = np.asarray(y).reshape(-1).astype(str)
    known = sorted(set(values.tolist())) if labels is None else [str(v) for v in labels]
    index = {label: i for i, label in enumerate(known)}
    unknown = sorted(set(values.tolist()) - set(index))
    if unknown:
        raise UserError(f"label {unknown[0]!r} is not one of the classes the model was trained on: "
                        f"{', '.join(known)}")
    return np.array([index[v] for v in values.tolist()], dtype=np.int64), known


def decode(codes: np.ndarray, labels: Sequence[str] | None) -> np.ndarray:
    """The original labels of class indices ``codes`` (the indices themselves when ``labels`` is None)."""
    codes = np.asarray(codes)
    return codes if labels is None else np.asarray(labels, dtype=str)[codes]


def infer_task(y: np.ndarray, y_test: np.ndarray | None = None, source: str = "the data") -> str:
    """Classification when targets are one column of whole numbers in [0, 100) (labels 0..K-1), or of an
    integer type; regression otherwise. Pass ``task=`` to decide it yourself. Classification inferred for
    :data:`ANNOUNCED_CLASSES` or more distinct values is announced with a warning: counts, ages and prices are whole
    numbers too."""
    values = y if y_test is None else np.concatenate([y.reshape(len(y), -1), y_test.reshape(len(y_test), -1)])
    if values.ndim > 1 and values.shape[1] != 1:
        return "regression"
    if np.issubdtype(values.dtype, np.integer):
        task = "classification"
    else:
        whole = bool(np.all(values == np.round(values)))
        inside = whole and values.min() >= 0 and values.max() < MAX_INFERRED_CLASSES
        task = "classification" if inside else "regression"
    distinct = len(np.unique(values)) if task == "classification" else 0
    if distinct >= ANNOUNCED_CLASSES:
        warnings.warn(f"{source}: task = \"classification\" inferred from whole-number targets, {distinct} classes; "
                      "if they are quantities, set [data] task = \"regression\" (task='regression' from Python)",
                      UserWarning, stacklevel=3)
    return task
