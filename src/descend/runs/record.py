"""``inference.json``: what prediction needs from a run (task, input and output sizes, the fitted feature and
target scaling, the table encoding, class labels, feature columns), written once by the run and checked field by
field whenever it is read, since the file may have been edited."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import config as cfg
from ..data.core import TASKS
from ..data.scaling import Scaler
from ..data.tables import TableEncoder
from ..errors import UserError

INFERENCE_FILE = "inference.json"


def inference_record(config: cfg.Config, info, num_outputs: int, loss) -> dict:
    """What ``inference.json`` holds for a run of ``config`` on data described by ``info``."""
    return {"format": "descend-inference", "version": 1, "task": info.task, "input_shape": list(info.input_shape),
            "num_outputs": int(num_outputs), "num_classes": info.num_classes,
            "loss": loss if isinstance(loss, str) else None,
            "scaler": info.scaler.to_json() if info.scaler is not None else None,
            "target_scaler": info.target_scaler.to_json() if info.target_scaler is not None else None,
            "table": info.table.to_json() if info.table is not None else None,
            "labels": info.labels, "class_names": info.class_names, "feature_names": info.feature_names}


def checked_record(record: dict, path: Path) -> dict:
    """``inference.json`` as descend wrote it: each field of its type, and the fields consistent with each other
    (a class label per class, a scaling statistic per feature or channel, a name per CSV column). An edited file
    is one UserError naming the field, not a KeyError in prediction or silently wrong classes."""
    def texts(v):
        return v is None or (isinstance(v, list) and all(isinstance(t, str) for t in v) and len(set(v)) == len(v))

    def count(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    fields = {"task": (lambda v: v in TASKS, "one of " + ", ".join(TASKS)),
              "input_shape": (lambda v: isinstance(v, list) and v and all(count(n, 1) for n in v),
                              "a non-empty list of integers >= 1"),
              "num_outputs": (lambda v: count(v, 1), "an integer >= 1"),
              "num_classes": (lambda v: v is None or count(v, 2), "an integer >= 2 or null"),
              "scaler": (lambda v: v is None or isinstance(v, dict), "an object or null"),
              "labels": (texts, "a list of distinct strings or null"),
              "feature_names": (texts, "a list of distinct strings or null")}
    for field, (ok, wanted) in fields.items():
        if not ok(record.get(field)):
            raise UserError(f"{path}: {field} must be {wanted}, got {str(record.get(field))[:60]}; was it edited?")
    shape, k, names = record["input_shape"], record["num_classes"], record["feature_names"]
    if record["task"] == "classification" and (k is None or record["num_outputs"] not in (k, 1 if k == 2 else k)):
        raise UserError(f"{path}: a classifier of {k} classes cannot have {record['num_outputs']} outputs")
    if record["labels"] is not None and len(record["labels"]) != k:
        raise UserError(f"{path}: labels names {len(record['labels'])} classes, num_classes says {k}")
    table = TableEncoder.from_json(record["table"]) if record.get("table") else None
    if table is not None and (names is None or len(table.columns) != len(names) or [table.width] != shape):
        raise UserError(f"{path}: the table encoding must read the {len(names or [])} feature columns and give the "
                        f"model's {shape} inputs; was it edited?")
    if table is None and names is not None and [len(names)] != shape:
        raise UserError(f"{path}: feature_names names {len(names)} columns, input_shape is {shape}")
    scaler = feature_scaler(record)
    want = (shape[0], *(1,) * (len(shape) - 1))  # per feature, or per channel
    if scaler is not None and not _fitted(scaler, want):
        raise UserError(f"{path}: the saved feature scaling must hold finite statistics of shape {want} (scale > 0) "
                        f"for inputs of shape {tuple(shape)}; was it edited?")
    target = record.get("target_scaler")  # absent in runs from before targets were standardised
    if target is not None:
        ok = isinstance(target, dict) and record["task"] == "regression"
        scaler = Scaler.from_json(target) if ok else None
        if not ok or not _fitted(scaler, (record["num_outputs"],)):
            raise UserError(f"{path}: target_scaler must hold finite statistics for the {record['num_outputs']} "
                            "regression output(s) (scale > 0), or be null; was it edited?")
    return record


def feature_scaler(record: dict) -> Scaler | None:
    return Scaler.from_json(record["scaler"]) if record["scaler"] else None


def _fitted(scaler: Scaler, shape: tuple) -> bool:
    """A scaling fitted by descend: statistics of ``shape``, finite, every scale positive."""
    return (scaler.shift.shape == scaler.scale.shape == shape and bool(torch.isfinite(scaler.shift).all())
            and bool((scaler.scale > 0).all()))
