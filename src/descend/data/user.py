"""Data from the user's own code: whatever a loader function returns, as the raw arrays descend splits, scales and
checks like its own data.

A loader (named in a recipe as ``[data] name = "package.module:loader"`` or ``"path/to/file.py:loader"``, or passed
from Python) may return:

- ``(x, y)``: two arrays of the same length (numpy arrays, torch tensors, pandas or polars frames and series, lists);
- a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)`` pairs: materialised into two tensors when it
  fits in memory (checked against :func:`descend.memory.memory_limit` from its first item before anything is
  stacked);
- named splits: a dict with ``"train"`` and optionally ``"val"`` and ``"test"``, each ``(x, y)`` or a Dataset. Splits
  that are given are used as they are; those missing are carved from ``train`` with the recipe's fractions.

Text labels (``"cat"``, ``"dog"``) are encoded as classes in sorted order, as a CSV file's are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from descend import usercode
from descend.data.build import build, check_targets
from descend.data.core import DataBundle, RawData, as_tensor
from descend.data.files import check_finite
from descend.data.labels import encode as encode_labels
from descend.data.labels import infer_task
from descend.data.tables import is_table
from descend.errors import UserError
from descend.memory import check_fits_memory

SPLITS = ("train", "val", "test")
SHAPES = "(x, y) arrays or tensors, a torch Dataset of (x, y) items, or a dict of splits {'train': (x, y), ...}"


def call_loader(text: str, options: Mapping[str, Any], *, base: Path | None = None) -> Any:
    """Import the loader ``text`` names and call it with the recipe's ``[data]`` ``options`` as keyword arguments
    (checked against its signature first). What it returns goes to :func:`descend.data.from_user`."""
    loader = usercode.load(text, base=base, what="data loader")
    kwargs = usercode.call_kwargs(loader, options, {}, what=f"data loader {text!r}")
    try:
        return loader(**kwargs)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"data loader {text!r} failed: {type(e).__name__}: {e}") from e


def _materialise(dataset: torch.utils.data.Dataset, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style Dataset of ``(x, y)`` items as two stacked tensors, after checking they fit in memory."""
    try:
        n = len(dataset)
    except TypeError:
        raise UserError(
            f"{what} is an iterable Dataset without a length; descend trains on data held in memory: "
            "return (x, y) arrays, or a Dataset with __len__ and __getitem__"
        ) from None
    if n == 0:
        raise UserError(f"{what} is an empty Dataset")
    first = dataset[0]
    if not isinstance(first, (tuple, list)) or len(first) != 2:
        raise UserError(f"the items of {what} must be (x, y) pairs, got {type(first).__name__}")
    x0, y0 = as_tensor(first[0]), torch.as_tensor(first[1])
    per_item = x0.numel() * max(x0.element_size(), 4) + y0.numel() * 8
    check_fits_memory(
        f"{what} with {n:,} items of shape {tuple(x0.shape)}",
        2 * n * per_item,
        "return a smaller Dataset, or (x, y) arrays memory-mapped from disk",
    )
    xs, ys = [x0], [y0]
    for i in range(1, n):
        item = dataset[i]
        xs.append(as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
    try:
        return torch.stack(xs), torch.stack(ys)
    except RuntimeError as e:
        raise UserError(f"the items of {what} differ in shape ({e}); every x must have one shape") from None


def _column_names(x: Any) -> list[str] | None:
    columns = getattr(x, "columns", None)
    return [str(c) for c in columns] if columns is not None else None


def _as_array(values: Any, what: str) -> np.ndarray:
    """An array-like as numpy; text and mixed columns stay as object/str arrays for the table encoder."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise UserError(f"{what} is not an array: {e}") from None
    if array.dtype == object and array.size and all(isinstance(v, str) for v in array.reshape(-1)):
        array = array.astype(str)
    return array


def _pair(value: Any, what: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(x, y, feature_names)`` from ``(x, y)`` or a Dataset."""
    if isinstance(value, torch.utils.data.Dataset):
        x, y = _materialise(value, what)
        return x.numpy(), y.numpy(), None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise UserError(f"{what} must be {SHAPES}; got {type(value).__name__}")
    x, y = _as_array(value[0], f"x of {what}"), _as_array(value[1], f"y of {what}")
    if x.ndim == 0 or y.ndim == 0:
        raise UserError(f"{what}: x and y must be arrays with one row per sample, got shapes {x.shape} and {y.shape}")
    if x.ndim == 1:
        x = x[:, None]  # one feature per sample
    if len(x) != len(y):
        raise UserError(f"{what} has {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise UserError(f"{what} has no rows")
    if y.ndim == 2 and y.shape[1] == 1 and y.dtype.kind in "USO":
        y = y[:, 0]
    return x, y, _column_names(value[0])


def splits_of(obj: Any, what: str = "the data") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The splits ``obj`` gives (``train`` always; ``val``/``test`` where given), each ``(x, y)`` as numpy arrays,
    text labels of every split encoded with one mapping; also ``"feature_names"`` and ``"labels"`` entries."""
    if isinstance(obj, Mapping):
        unknown = [k for k in obj if k not in SPLITS]
        if unknown or "train" not in obj:
            raise UserError(
                f"{what}: a dict of splits has keys 'train' and optionally 'val' and 'test'; got "
                f"{', '.join(map(repr, obj)) or 'no keys'}"
            )
        parts = {k: _pair(obj[k], f"split {k!r} of {what}") for k in SPLITS if obj.get(k) is not None}
    else:
        parts = {"train": _pair(obj, what)}
    shape = parts["train"][0].shape[1:]
    for k, (x, _, _) in parts.items():
        if x.shape[1:] != shape:
            raise UserError(f"split {k!r} of {what} has samples of shape {x.shape[1:]}, 'train' has {shape}")
    text = [k for k, (_, y, _) in parts.items() if y.dtype.kind in "US"]
    labels = None
    if text:
        if len(text) != len(parts):
            raise UserError(
                f"{what}: the labels of {text[0]!r} are text but those of another split are numbers; "
                "give every split's labels the same way"
            )
        _, labels = encode_labels(np.concatenate([y for _, y, _ in parts.values()]))
        parts = {k: (x, encode_labels(y, labels)[0], n) for k, (x, y, n) in parts.items()}
    out: dict[str, Any] = {k: (x, y) for k, (x, y, _) in parts.items()}
    out["feature_names"], out["labels"] = parts["train"][2], labels
    return out


def from_user(
    data: Any,
    *,
    name: str = "user data",
    task: str | None = None,
    num_classes: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    scale: str = "standardize",
    seed: int = 0,
    target_scale: str = "standardize",
    missing: str = "impute",
    source: str | None = None,
) -> DataBundle:
    """Your own data as a :class:`DataBundle`, split, scaled and checked as descend's own datasets are.

    ``data`` is ``(x, y)`` (arrays, tensors, DataFrames), a ``torch.utils.data.Dataset`` of ``(x, y)`` items, or a
    dict of splits ``{"train": (x, y), "val": ..., "test": ...}`` (see this module). Splits not given
    are carved from ``train``: ``test_fraction`` (default 0.2 unless a test split is given), then ``val_fraction``.
    ``task`` is inferred from ``y`` as for files unless given; text labels are encoded in sorted order. Text columns
    and missing cells (a DataFrame as it comes) are encoded by :mod:`descend.data.tables` (``missing``: "impute" or
    "refuse"). This is what
    a recipe's ``[data] name = "package.module:loader"`` and ``descend.run(recipe, data=...)`` both use.
    """
    parts = splits_of(data, f"data {name!r}")
    x, y = parts["train"]
    x_val, y_val = parts.get("val", (None, None))
    x_test, y_test = parts.get("test", (None, None))
    table = any(is_table(parts[k][0]) for k in SPLITS if k in parts)  # checked by the table encoder instead
    for split, (px, py) in ((k, parts[k]) for k in SPLITS if k in parts):
        if not table:
            check_finite(f"inputs of split {split!r} of {name!r}", px)
        check_finite(f"targets of split {split!r} of {name!r}", py)
    if parts["labels"] is not None:
        if task == "regression":
            raise UserError(f"the targets of {name!r} are text, which cannot be regressed on")
        task = "classification"
    raw = RawData(
        x=x,
        y=y,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        task=task or infer_task(y, y_test, f"data {name!r}"),
        num_classes=num_classes,
        feature_names=parts["feature_names"],
        class_names=parts["labels"],
        labels=parts["labels"],
        source=source or f"{name} (from Python)",
    )
    check_targets(raw)
    if x_val is not None:
        check_targets(RawData(x=x_val, y=y_val, task=raw.task, source=raw.source, num_classes=raw.num_classes))
    return build(
        raw,
        name,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        scale=scale,
        seed=int(seed),
        target_scale=target_scale,
        missing=missing,
    )
