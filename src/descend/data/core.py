"""The in-memory containers every part of descend trains on: :class:`Split`, :class:`DatasetInfo`,
:class:`DataBundle`, plus the raw numpy form a dataset loader returns before splitting and scaling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from descend.data.scaling import Scaler
    from descend.data.tables import TableEncoder

TASKS = ("classification", "regression")
#: What one sample is: an image (C, H, W), a 1-D signal (L,) or (C, L), or a row of unordered features (F,).
KINDS = ("image", "signal", "tabular")


def as_tensor(values) -> torch.Tensor:
    """``torch.as_tensor`` for array-likes (numpy arrays, pandas or polars frames and series, lists, tensors),
    copying a read-only numpy array instead of sharing it: torch tensors are always writable, so torch cannot share
    memory it may not write and warns instead. Read-only arrays are common: a DataFrame's values under pandas'
    copy-on-write, a memory-mapped or broadcast array, ``np.frombuffer``."""
    if isinstance(values, torch.Tensor):
        return values
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()
    if isinstance(values, np.ndarray) and not values.flags.writeable:
        values = values.copy()
    return torch.as_tensor(values)


def kind_of(sample_shape: tuple[int, ...]) -> str:
    """The kind a sample's shape suggests where the data does not say: (F,) tabular, (C, L) signal, else image."""
    return {1: "tabular", 2: "signal"}.get(len(sample_shape), "image")


@dataclass
class Split:
    """One split (train, val or test) held in memory as two tensors.

    ``x`` is float32 of shape ``(N, *input_shape)``; ``y`` is int64 of shape ``(N,)`` for classification
    (labels ``0 .. num_classes-1``) and float32 of shape ``(N, k)`` for regression (standardised when
    ``target_scaler`` is set).
    """

    x: torch.Tensor
    y: torch.Tensor
    task: str
    num_classes: int | None = None
    #: regression targets were standardised with this (fitted on the training split): ``y = (raw - shift) / scale``;
    #: metrics and predictions apply its inverse, so they are in the targets' own units
    target_scaler: Scaler | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> Split:
        """The same split with both tensors on ``device`` (no copy when they already are)."""
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def subset(self, index: torch.Tensor | np.ndarray | list[int]) -> Split:
        """The rows ``index`` of this split, as a new split (for k-fold and small-subset checks)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long, device=self.x.device)
        return replace(self, x=self.x.index_select(0, idx), y=self.y.index_select(0, idx))


@dataclass
class DatasetInfo:
    """What a model and a report need to know about a loaded dataset.

    ``kind`` says what a sample is (:data:`KINDS`): an image, a 1-D signal whose axis is time or position, or
    a tabular row of features in no order (no flips or shifts there). ``sizes`` counts the rows of
    ``train``/``val``/``test``; ``source`` says where the data came from (package, file path, or generator and
    its parameters); ``scaler`` is the feature scaling fitted on the training split only (``None`` for
    ``scale="none"``).
    """

    name: str
    task: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    num_outputs: int
    sizes: dict[str, int]
    source: str
    scaler: Scaler | None = None
    target_scaler: Scaler | None = None  # regression targets' standardisation (``target_scale``), else None
    table: TableEncoder | None = None  # text columns and missing cells encoded (feature_names: the raw columns)
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    labels: list[str] | None = None  # the original label of each class index, when labels were text (encoded)
    kind: str = "tabular"  # one of KINDS: what augmentation and models may assume about a sample's axes


@dataclass
class DataBundle:
    """The result of :func:`descend.data.load`: the three splits and the dataset's description."""

    train: Split
    val: Split | None
    test: Split | None
    info: DatasetInfo


@dataclass
class RawData:
    """A dataset as a loader returns it: numpy arrays before splitting, scaling and conversion to tensors.

    ``x_test``/``y_test`` hold the dataset's own test split where it has one, ``x_val``/``y_val`` a validation
    split the user gave. ``y`` holds integer labels
    for classification and values of shape ``(N,)`` or ``(N, k)`` for regression. ``draw_val(n)``, for
    generated sets, draws ``n`` fresh validation samples, so the training split keeps all of ``x``. ``labels`` is
    the original label of each class index when a file's labels were text (see :mod:`descend.data.labels`).
    """

    x: np.ndarray
    y: np.ndarray
    task: str
    source: str
    num_classes: int | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    x_val: np.ndarray | None = None  # a validation split the user gave (named splits from a loader)
    y_val: np.ndarray | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    labels: list[str] | None = None
    draw_val: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
    kind: str | None = None  # one of KINDS; None: by the shape of a sample (kind_of)
