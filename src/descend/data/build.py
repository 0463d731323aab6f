"""From raw arrays to a :class:`DataBundle`: labels checked, splits drawn (test first, then validation from the
rest, unless the data brings its own), inputs scaled on the training split only, tensors made."""

from __future__ import annotations

import numpy as np
import torch

from descend.data.core import DataBundle, DatasetInfo, RawData, Split, kind_of
from descend.data.files import check_float32_range
from descend.data.scaling import Scaler, as_float_inputs, fit_scaler
from descend.data.splits import held_count, split_indices, warn_if_small
from descend.data.tables import TableEncoder, is_table
from descend.errors import UserError

DEFAULT_TEST_FRACTION = 0.2


def check_targets(raw: RawData) -> None:
    """Labels of a classification set must be whole numbers in [0, num_classes); sets ``raw.num_classes``."""
    if raw.task != "classification":
        return
    labels = [raw.y] + ([raw.y_test] if raw.y_test is not None else [])
    for y in labels:
        if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
            raise UserError(f"classification labels must be one column, got shape {y.shape} ({raw.source})")
        if not np.all(y == np.round(y)):
            bad = y.reshape(-1)[np.flatnonzero(y.reshape(-1) != np.round(y.reshape(-1)))[0]]
            raise UserError(
                f"classification labels must be whole numbers 0..K-1, got {float(bad):g} ({raw.source}); "
                "for real-valued targets use task='regression'"
            )
    low = min(int(y.min()) for y in labels if y.size)
    high = max(int(y.max()) for y in labels if y.size)
    k = raw.num_classes if raw.num_classes is not None else high + 1
    if low < 0 or high >= k:
        raise UserError(f"classification labels must be in [0, {k - 1}], got {low if low < 0 else high} ({raw.source})")
    rows = sum(len(y) for y in labels)
    if raw.num_classes is None and k > rows:  # labels 0..K-1 number the classes: a gap this wide is a mistake
        raise UserError(
            f"classification labels go up to {high}, which would mean {k} classes for {rows} samples "
            f"({raw.source}); number the classes 0..K-1, give num_classes, or use task='regression'"
        )
    raw.num_classes = max(k, 2)


def check_training_split(name: str, y: np.ndarray, task: str, sizes: str) -> None:
    """A training split a model can learn from: two rows at least, and two classes for a classifier."""
    if len(y) < 2:
        raise UserError(
            f"the training split of {name!r} has {len(y)} row{'s' * (len(y) != 1)} ({sizes}); "
            "training needs at least 2: add data or lower the fractions"
        )
    if task == "classification" and len(np.unique(y)) < 2:
        raise UserError(
            f"the training split of {name!r} holds only class {int(np.unique(y)[0])}: a classifier "
            "needs examples of at least two classes"
        )


def _tensor_y(y: np.ndarray, task: str) -> torch.Tensor:
    if task == "classification":
        return torch.as_tensor(y.reshape(-1).astype(np.int64))
    return torch.as_tensor(y.reshape(len(y), -1).astype(np.float32))


def build(
    raw: RawData,
    name: str,
    *,
    val_fraction: float,
    test_fraction: float | None,
    scale: str,
    seed: int,
    target_scale: str = "standardize",
    missing: str = "impute",
) -> DataBundle:
    """Split ``raw`` (test first, then val from the rest), fit the input scaler on train, and make tensors.

    Inputs with text columns or missing cells are encoded by a :class:`TableEncoder` fitted on the training split
    (``missing``: "impute" or "refuse"). ``target_scale="standardize"`` standardises regression targets with the
    training split's mean and standard deviation per output (a network's last layer starts near zero, and an MSE of
    targets around 100 would start at 10⁴ and give gradients a hundred times those a unit-scale target gives);
    ``"none"`` keeps them as they are.
    """
    x, y = raw.x, raw.y
    if raw.draw_val is not None and test_fraction is None:  # generated: all n_train train, fresh val
        parts = {
            "train": (x, y),
            "val": raw.draw_val(held_count(len(x), val_fraction)),
            "test": (raw.x_test, raw.y_test),
        }
    elif raw.x_test is not None and test_fraction is None:
        idx = split_indices(
            y,
            val_fraction=0.0 if raw.x_val is not None else val_fraction,
            test_fraction=0.0,
            seed=seed,
            stratify=raw.task == "classification",
        )
        parts = {
            "train": (x[idx["train"]], y[idx["train"]]),
            "val": (x[idx["val"]], y[idx["val"]]),
            "test": (raw.x_test, raw.y_test),
        }
    else:
        if raw.x_test is not None:  # a test fraction was asked for: pool the dataset's own split and re-split
            if raw.x_test.shape[1:] != x.shape[1:]:
                raise UserError(
                    f"test inputs have shape {raw.x_test.shape[1:]} per sample, training inputs "
                    f"{x.shape[1:]} ({raw.source})"
                )
            x, y = np.concatenate([x, raw.x_test]), np.concatenate([y, raw.y_test])
        frac = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        idx = split_indices(
            y,
            val_fraction=0.0 if raw.x_val is not None else val_fraction,
            test_fraction=frac,
            seed=seed,
            stratify=raw.task == "classification",
        )
        parts = {k: (x[i], y[i]) for k, i in idx.items()}
    if raw.x_val is not None:  # the user's own validation split, used as it is
        parts["val"] = (raw.x_val, raw.y_val)
    check_training_split(
        name, parts["train"][1], raw.task, f"{len(x)} rows, val_fraction={val_fraction}, test_fraction={test_fraction}"
    )
    for key, split, field in (("val", "validation", "val_fraction"), ("test", "test", "test_fraction")):
        if parts[key][0] is not None:
            warn_if_small(name, split, len(parts[key][0]), raw.num_classes, field)
    table = None
    if any(is_table(px) for px, _ in parts.values()):  # text columns or missing cells: encoded as training says
        table = TableEncoder.fit(parts["train"][0], raw.feature_names, missing=missing, where=f"data {name!r}")
        parts = {
            k: (table.transform(px, f"the {k} split of {name!r}") if px is not None else px, py)
            for k, (px, py) in parts.items()
        }
    for what, (px, py) in parts.items():
        check_float32_range(f"{what} inputs of {name!r}", px)
        if raw.task == "regression":
            check_float32_range(f"{what} targets of {name!r}", py)
    parts = {k: (as_float_inputs(px), py) for k, (px, py) in parts.items()}
    scaler = fit_scaler(scale, parts["train"][0])
    target_scaler = None
    if raw.task == "regression" and target_scale == "standardize":
        target_scaler = Scaler.fit("standardize", _tensor_y(parts["train"][1], raw.task))
    splits: dict[str, Split | None] = {}
    for key, (px, py) in parts.items():
        if len(px) == 0:
            splits[key] = None
            continue
        tx = scaler.transform(px) if scaler is not None else px
        ty = _tensor_y(py, raw.task)
        splits[key] = Split(
            x=tx.contiguous(),
            y=target_scaler.transform(ty) if target_scaler is not None else ty,
            task=raw.task,
            num_classes=raw.num_classes,
            target_scaler=target_scaler,
        )
    train = splits["train"]
    assert train is not None
    num_outputs = raw.num_classes if raw.task == "classification" else int(train.y.shape[1])
    info = DatasetInfo(
        name=name,
        task=raw.task,
        input_shape=tuple(train.x.shape[1:]),
        num_classes=raw.num_classes,
        num_outputs=int(num_outputs),
        sizes={k: len(s) if s is not None else 0 for k, s in splits.items()},
        source=raw.source,
        scaler=scaler,
        target_scaler=target_scaler,
        table=table,
        feature_names=raw.feature_names,
        class_names=raw.class_names,
        labels=raw.labels,
        kind=raw.kind or kind_of(tuple(train.x.shape[1:])),
    )
    return DataBundle(train=train, val=splits["val"], test=splits["test"], info=info)
