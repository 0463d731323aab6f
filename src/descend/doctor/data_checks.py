"""Checks on the data before any training (Karpathy's recipe, step 1: "become one with the data"; deepchecks'
train-test validation suite).

Each function takes the loaded splits and returns findings: non-finite values, labels outside the classes the
model predicts, class imbalance, inputs far from unit scale or with feature scales orders of magnitude apart,
samples shared between the training and the validation/test splits, and too few samples to learn from.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from ..data import DataBundle, Split
from ..data.files import is_number
from .findings import Finding, Fix

LEAKAGE_FRACTION = 0.05     # deepchecks' train-test samples mix: 5% of the test set by default
IMBALANCE_RATIO = 10.0      # most / least frequent class
SCALE_SPREAD = 100.0        # largest / median feature standard deviation
UNIT_SCALE = (1e-2, 30.0)   # typical feature std expected near 1 when scale = "none"
SAMPLES_PER_CLASS = 10


def check_data(bundle: DataBundle, scale: str | None = None) -> list[Finding]:
    """All data checks on a loaded bundle; ``scale`` is the recipe's ``data.scale`` (None: not from a recipe)."""
    train = bundle.train
    findings = non_finite(bundle)
    if train.task == "classification":
        findings += labels(bundle)
    if not findings:  # statistics of NaN inputs or impossible labels would only repeat those findings
        findings += unscaled(train, scale)
        findings += leakage(bundle)
        findings += too_few(train)
        if train.task == "classification":
            findings += imbalance(train)
    return findings


def non_finite(bundle: DataBundle) -> list[Finding]:
    counts = {}
    for name, split in _splits(bundle):
        bad = int((~torch.isfinite(split.x)).sum())
        if split.y.dtype.is_floating_point:
            bad += int((~torch.isfinite(split.y)).sum())
        if bad:
            counts[name] = bad
    if not counts:
        return []
    return [nan_finding(counts, "the splits")]


def nan_finding(counts: dict[str, int], where: str, rows: list[int] | None = None) -> Finding:
    total = sum(counts.values())
    evidence = {"non_finite_values": counts, **({"first_rows": rows[:10]} if rows else {})}
    return Finding("data_nan", "error", f"{total} NaN or infinite value(s) in {where}: training would turn the loss "
                   "into NaN at the first batch that holds one", evidence,
                   Fix("remove the rows that hold them, or impute the values (e.g. each feature's training-split "
                       "median) before training; descend refuses such data"))


def scan_csv(path: str | Path, delimiter: str = ",") -> Finding | None:
    """A ``data_nan`` finding for a CSV whose cells are NaN, infinite or empty (None when every cell is finite)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    bad_rows, count = [], 0
    for line, row in enumerate(rows, start=1):
        bad = sum(not _finite_cell(c) for c in row)
        if bad and not (line == 1 and not any(is_number(c) for c in row)):  # a header row is not data
            bad_rows.append(line)
            count += bad
    if not count:
        return None
    return nan_finding({"file": count}, f"{Path(path).name} ({len(bad_rows)} of {len(rows)} rows)", bad_rows)


def imputed(finding: Finding) -> Finding:
    """A CSV's ``data_nan`` finding when descend imputes the cells (``[data] missing = "impute"``, the default):
    training runs, so a warning, but each imputed cell is a guess the user should know about."""
    cells = sum(finding.evidence["non_finite_values"].values())
    return Finding("data_nan", "warning", f"{cells} missing or non-finite cell(s) in the data file: descend imputes "
                   "them (each column's training-split median, plus a 0/1 column saying which were missing)",
                   finding.evidence,
                   Fix("check why the cells are missing; if a missing value cannot be guessed, fix the file or "
                       "set [data] missing = \"refuse\""))


def _finite_cell(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return cell.strip().lower() not in ("", "na", "n/a", "null", "none", "?")


def labels(bundle: DataBundle) -> list[Finding]:
    """Labels outside 0..C-1 for the C classes the data declares (a head of the wrong size is the init check's)."""
    classes = bundle.train.num_classes
    bad = {}
    for name, split in _splits(bundle):
        lo, hi = int(split.y.min()), int(split.y.max())
        if lo < 0 or (classes and hi >= classes):
            bad[name] = [lo, hi]
    if not bad:
        return []
    return [Finding("label_out_of_range", "error", f"class labels outside 0..{classes - 1} (the data declares "
                    f"{classes} classes): cross-entropy fails or learns nonsense on them",
                    {"classes": classes, "label_range": bad},
                    Fix(f"map the labels to 0..C-1, or declare C = the largest label + 1 "
                        f"= {max(v[1] for v in bad.values()) + 1} classes"))]


def unscaled(train: Split, scale: str | None) -> list[Finding]:
    """Feature scales orders of magnitude apart, or far from unit scale, when the recipe scales nothing.

    A recipe that standardizes or min-max scales has done what can be done. Images and signals (inputs of rank 2
    or more, channels first) are compared per channel: pixels near a border are nearly constant by nature. The
    spread is the largest standard deviation over the median one, so a few constant features do not count.
    """
    if scale in ("standardize", "minmax"):
        return []
    x = train.x.double()
    x = x.transpose(0, 1).reshape(x.shape[1], -1).T if x.dim() > 2 else x.reshape(len(train), -1)
    std = x.std(dim=0) if len(x) > 1 else torch.zeros(x.shape[1], dtype=x.dtype)
    used = std[std > 0]
    if used.numel() == 0:
        return []
    typical, widest = float(used.median()), int(torch.argmax(std))
    spread = float(used.max()) / typical
    evidence = {"feature_std_min": float(used.min()), "feature_std_median": typical,
                "feature_std_max": float(used.max()), "std_ratio_max_median": spread, "scale": scale or "unknown",
                "widest_feature": widest}
    far = not UNIT_SCALE[0] <= float(used.max()) <= UNIT_SCALE[1]
    if spread < SCALE_SPREAD and not far:
        return []
    fix = Fix('standardize the inputs (data.scale = "standardize"): each feature to mean 0 and std 1 on the '
              "training split (LeCun et al., \"Efficient BackProp\")", {"data.scale": "standardize"})
    severity = "error" if spread >= 3 * SCALE_SPREAD or float(used.max()) >= 100 else "warning"
    why = (f"feature standard deviations reach {spread:.3g}x the median one (feature {widest}: "
           f"{float(used.max()):.3g})" if spread >= SCALE_SPREAD else
           f"features have standard deviations up to {float(used.max()):.3g}")
    return [Finding("unscaled_inputs", severity, f"{why}: gradient descent then crawls along the small directions "
                    "and a learning rate that suits one feature is too large for another", evidence, fix,
                    _std_plot(std))]


def _std_plot(std: torch.Tensor) -> dict:
    xs = list(range(len(std)))
    return {"title": "feature standard deviation (training split)", "xlabel": "feature", "ylabel": "std",
            "ylog": True, "series": {"std": (xs, [max(float(s), 1e-12) for s in std])}}


def leakage(bundle: DataBundle) -> list[Finding]:
    """Samples whose inputs appear identically in the training split and in the validation or test split."""
    seen = set(_row_keys(bundle.train))
    shared, sizes = {}, {}
    for name, split in _splits(bundle):
        if name == "train":
            continue
        keys = _row_keys(split)
        shared[name] = sum(k in seen for k in keys)
        sizes[name] = len(split)
    fractions = {n: shared[n] / sizes[n] for n in shared if sizes[n]}
    leaked = {n: f for n, f in fractions.items() if f > LEAKAGE_FRACTION}
    if not leaked:
        return []
    name, worst = max(leaked.items(), key=lambda item: item[1])
    return [Finding("train_test_leakage", "error", f"{worst:.0%} of the {name} samples also appear in the training "
                    f"split: their scores measure memory, not generalisation (deepchecks flags more than "
                    f"{LEAKAGE_FRACTION:.0%})", {"shared_samples": shared, "split_sizes": sizes,
                                                  "shared_fraction": fractions},
                    Fix("remove duplicate rows before splitting (or split by a group key, e.g. per subject), so no "
                        "sample is in two splits"))]


def _row_keys(split: Split) -> list[bytes]:
    rows = split.x.reshape(len(split), -1).detach().cpu().numpy().astype(np.float32)
    return [r.tobytes() for r in np.ascontiguousarray(rows)]


def too_few(train: Split) -> list[Finding]:
    n = len(train)
    if train.task == "classification":
        counts = torch.bincount(train.y.cpu(), minlength=train.num_classes or 0)
        counts = counts[counts > 0]
        least = int(counts.min()) if counts.numel() else 0
        if least >= SAMPLES_PER_CLASS:
            return []
        message = f"only {least} training sample(s) in the rarest class"
        evidence = {"train_samples": n, "least_class_count": least, "threshold_per_class": SAMPLES_PER_CLASS}
    else:
        features = int(np.prod(train.x.shape[1:]))
        if n >= max(SAMPLES_PER_CLASS * features, 2 * SAMPLES_PER_CLASS) or n >= 1000:
            return []
        message = f"{n} training samples for {features} input feature(s)"
        evidence = {"train_samples": n, "features": features}
    return [Finding("too_few_samples", "warning", f"{message}: estimates will be noisy and a flexible model can "
                    "memorise the training split", evidence,
                    Fix("collect more data or augment it; keep the model small and regularized, and use k-fold "
                        "cross-validation to judge it"))]


def imbalance(train: Split) -> list[Finding]:
    counts = torch.bincount(train.y.cpu(), minlength=train.num_classes or 0).double()
    present = counts[counts > 0]
    if present.numel() < 2:
        return []
    ratio = float(present.max() / present.min())
    if ratio < IMBALANCE_RATIO:
        return []
    return [Finding("class_imbalance", "warning", f"the most frequent class has {ratio:.0f}x the samples of the "
                    "rarest: accuracy rewards predicting the majority", {"class_counts": counts.int().tolist(),
                                                                         "ratio": ratio},
                    Fix("resample the training split to balance the classes (or weight the loss by inverse class "
                        "frequency) and judge the model by per-class recall, not accuracy"))]


def _splits(bundle: DataBundle):
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        if split is not None and len(split):
            yield name, split
