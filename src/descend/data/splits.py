"""Train / validation / test splits, stratified for classification and seeded.

A held-out part of fraction f of N rows has round(f·N) rows. For classification it is stratified: each class
c with n_c rows gives ⌊f·n_c⌋ rows, and the rows still missing go to the classes with the largest remainders
f·n_c - ⌊f·n_c⌋ (largest-remainder rounding), so every split keeps the class proportions as closely as
whole rows allow. Which rows of a class are held out is drawn from ``numpy.random.default_rng(seed)``.

The test split is split off first and never used for any decision: the validation split is carved from
the remaining training part, and the feature scaling is fitted on the final training split only.
"""

from __future__ import annotations

import numpy as np

from descend.errors import UserError


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
