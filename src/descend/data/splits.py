"""Train / validation / test splits, stratified for classification and seeded.

A held-out part of fraction f of N rows has round(f·N) rows. For classification it is stratified: each class
c with n_c rows gives ⌊f·n_c⌋ rows, and the rows still missing go to the classes with the largest remainders
f·n_c - ⌊f·n_c⌋ (largest-remainder rounding), so every split keeps the class proportions as closely as
whole rows allow. Which rows of a class are held out is drawn from ``numpy.random.default_rng(seed)``.

The test split is split off first and never used for any decision: the validation split is carved from
the remaining training part, and the feature scaling is fitted on the final training split only.
"""

from __future__ import annotations

import warnings

import numpy as np

from descend.errors import UserError

#: a held-out split with fewer rows than this is too small to judge a model on: one row moves its accuracy by more
#: than 10 points, and the standard error of its mean loss is over a third of the loss's spread
MIN_HELD_ROWS = 10


def warn_if_small(name: str, split: str, rows: int, classes: int | None, field: str) -> None:
    """Warn about a validation or test split of ``rows`` (> 0) that cannot measure much: fewer than
    :data:`MIN_HELD_ROWS` rows, or fewer rows than classes (some class cannot be in it)."""
    least = max(MIN_HELD_ROWS, classes or 0)
    if 0 < rows < least:
        if rows < (classes or 0):
            reason = f"fewer rows than the {classes} classes, so some class is missing from it"
        elif classes:
            reason = f"one row moves its accuracy by {1 / rows:.0%}"
        else:
            reason = f"its mean loss rests on {rows} sample{'s' * (rows != 1)}"
        use = "early stopping and model choice would follow noise" if split == "validation" else \
            "its scores are mostly noise"
        warnings.warn(f"the {split} split of {name!r} has {rows} row{'s' * (rows != 1)}: {reason}, and {use}; "
                      f"raise data.{field} (at least {least} rows) or use cross-validation (descend cv)",
                      UserWarning, stacklevel=3)


def held_count(n: int, fraction: float) -> int:
    """Rows held out of ``n`` for ``fraction``: round(fraction · n)."""
    return int(round(fraction * n))


def holdout(
    y: np.ndarray, fraction: float, rng: np.random.Generator, *, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held)`` (each sorted) with ``len(held) == round(fraction * len(y))``."""
    n = len(y)
    n_held = held_count(n, fraction)
    if not stratify:
        perm = rng.permutation(n)
        return np.sort(perm[n_held:]), np.sort(perm[:n_held])
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quota = fraction * counts
    take = np.floor(quota).astype(np.int64)
    missing = n_held - int(take.sum())
    if missing > 0:
        # largest remainder first; ties broken at random so no class is favoured by its label
        tiebreak = rng.random(len(classes))
        order = np.lexsort((tiebreak, -(quota - take)))
        take[order[:missing]] += 1
    held = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        held.append(rng.permutation(members)[: take[c]])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def kfold_indices(
    y: np.ndarray, k: int, *, seed: int = 0, stratify: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_idx, val_idx)`` whose validation parts partition ``range(len(y))``.

    Stratified for classification labels (rows of each class dealt round-robin over the folds after a seeded
    shuffle), a seeded random partition otherwise. Fold sizes differ by at most one row per class.
    """
    y = np.asarray(y)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= len(y):
        raise UserError(f"k (folds) must be an integer in [2, {len(y)}], got {k!r}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    if stratify:
        offset = 0
        for c in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == c))
            fold[members] = (np.arange(len(members)) + offset) % k
            offset += len(members)  # continue the deal where the last class stopped: balanced fold sizes
    else:
        fold[rng.permutation(len(y))] = np.arange(len(y)) % k
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


def split_indices(
    y: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int, stratify: bool
) -> dict[str, np.ndarray]:
    """Row indices of ``train``/``val``/``test`` for one pool of data: test first, then val from the rest."""
    rng = np.random.default_rng(seed)
    rest, test = holdout(y, test_fraction, rng, stratify=stratify)
    keep, val = holdout(y[rest], val_fraction, rng, stratify=stratify)
    return {"train": rest[keep], "val": rest[val], "test": test}
