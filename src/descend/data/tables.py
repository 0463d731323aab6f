"""Tables as people have them: text columns and missing cells, encoded as the numbers a network takes.

:class:`TableEncoder` is fitted on the training split only and applied unchanged to validation, test and new rows
(``descend predict`` on a raw CSV file), and saved as JSON in the run's ``inference.json``. Per column:

- **Numbers**: a column whose training cells (missing ones aside) are all numbers. Missing cells (empty, ``NA``,
  ``N/A``, ``NaN``, ``null``, ``None``, ``?``) are imputed with the training split's median, and a 0/1 indicator
  column ``<name>=missing`` is added when the training split had any, so the network can tell an imputed value from
  a real one (the "missing indicator" of Little & Rubin, *Statistical Analysis with Missing Data*; scikit-learn's
  ``SimpleImputer(add_indicator=True)``). With ``missing="refuse"`` a missing cell is an error naming it.
- **Categories**: a column whose training cells are mostly (more than half) text. It is one-hot encoded: one 0/1
  column per level, the :data:`MAX_LEVELS` - 1 most frequent levels of the training split kept and the rarer ones
  (and levels never seen in training) sharing one ``<name>=other`` column when there are more than
  :data:`MAX_LEVELS`; a missing cell is the level ``(missing)``. One-hot with a cap, not an embedding: descend's
  networks and your factories take one float vector per sample (``input_shape``), which an embedding's integer
  indices do not fit, and the cap bounds the width as scikit-learn's ``OneHotEncoder(max_categories=...)`` does.
- A mostly-number column with a few text cells is an error naming the first one: a typo, or a missing-value marker
  to write as an empty cell.

The encoder is written by hand rather than fitted with scikit-learn's transformers because a run directory holds
no pickle: its whole state is the short JSON of :meth:`TableEncoder.to_json`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from descend.errors import UserError

MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
MISSING_POLICIES = ("impute", "refuse")
MAX_LEVELS = 20  # one-hot columns per text column at most (the last one "other" when there are more levels)
MISSING_LEVEL = "(missing)"


def is_table(x: Any) -> bool:
    """Whether inputs need encoding: text or mixed cells (a string or object array), or numbers with NaN."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        return False
    if x.dtype.kind in "OUS":
        return True
    return x.dtype.kind == "f" and bool(np.isnan(x).any())


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


def _refused(where: str, column: str, count: int) -> str:
    return (
        f"{where}: column {column!r} has {count} missing cell{'s' * (count != 1)} (empty, NA, NaN, ...); fill "
        'them in, or let descend impute them from the training split: [data] missing = "impute"'
    )


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


@dataclass
class Column:
    """How one input column is encoded (see the module's docstring)."""

    name: str
    kind: str  # "number" or "category"
    fill: float | None = None  # the training median, for missing cells of a number column
    indicator: bool = False  # a "<name>=missing" column (the training split had missing cells)
    levels: list[str] = field(default_factory=list)  # one-hot levels, most frequent first
    other: bool = False  # a "<name>=other" column for rarer and unseen levels

    def outputs(self) -> list[str]:
        if self.kind == "number":
            return [self.name] + ([f"{self.name}=missing"] if self.indicator else [])
        return [f"{self.name}={level}" for level in self.levels] + ([f"{self.name}=other"] if self.other else [])


class TableEncoder:
    """Text columns one-hot encoded and missing cells imputed, as fitted on a training split (:meth:`fit`)."""

    def __init__(self, columns: list[Column], missing: str = "impute") -> None:
        self.columns, self.missing = columns, missing

    @classmethod
    def fit(cls, x: np.ndarray, names: list[str] | None, *, missing: str = "impute", where: str = "the data"):
        """Decide each column's encoding from the training rows ``x`` (cells of any type, shape ``(N, F)``)."""
        if missing not in MISSING_POLICIES:
            raise UserError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
        names = list(names) if names is not None else [f"x{j}" for j in range(x.shape[1])]
        columns = []
        for j, name in enumerate(names):
            cells = [_cell(v) for v in x[:, j]]
            absent = [i for i, c in enumerate(cells) if c.lower() in MISSING_CELLS]
            if absent and missing == "refuse":
                raise UserError(_refused(where, name, len(absent)))
            present = [c for i, c in enumerate(cells) if c.lower() not in MISSING_CELLS]
            values = [_number(c) for c in present]
            text = [c for c, v in zip(present, values) if v is None]
            if not text:
                if any(not np.isfinite(v) for v in values):
                    raise UserError(f"{where}: column {name!r} holds an infinite value; remove or replace it")
                fill = float(np.median(values)) if values else 0.0
                columns.append(Column(name, "number", fill=fill, indicator=bool(absent)))
            elif 2 * len(text) <= len(present):
                raise UserError(
                    f"{where}: column {name!r} is mostly numbers but holds the text {text[0]!r}; fix the "
                    "cell, or leave it empty to mark it missing"
                )
            else:
                counts = Counter(present + [MISSING_LEVEL] * len(absent))
                ordered = sorted(counts, key=lambda level: (-counts[level], level))
                cut = len(ordered) > MAX_LEVELS
                columns.append(
                    Column(name, "category", levels=ordered[: MAX_LEVELS - 1] if cut else ordered, other=cut)
                )
        return cls(columns, missing)

    @property
    def names(self) -> list[str]:
        """The encoded columns' names, in order (what the network's inputs are)."""
        return [name for column in self.columns for name in column.outputs()]

    @property
    def width(self) -> int:
        return len(self.names)

    def transform(self, x: np.ndarray, where: str = "the inputs") -> np.ndarray:
        """Rows of cells ``(N, F)`` as float32 ``(N, width)``, with the training split's encoding."""
        x = np.asarray(x, dtype=object) if not isinstance(x, np.ndarray) else x
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise UserError(
                f"{where}: need rows of {len(self.columns)} columns "
                f"({', '.join(c.name for c in self.columns)}), got shape {x.shape}"
            )
        parts = []
        for j, column in enumerate(self.columns):
            cells = [_cell(v) for v in x[:, j]]
            absent = np.array([c.lower() in MISSING_CELLS for c in cells], dtype=bool)
            if absent.any() and self.missing == "refuse":
                raise UserError(_refused(where, column.name, int(absent.sum())))
            if column.kind == "number":
                values = np.empty(len(cells))
                for i, c in enumerate(cells):
                    v = column.fill if absent[i] else _number(c)
                    if v is None or not np.isfinite(v):
                        raise UserError(
                            f"{where}: column {column.name!r} holds {c!r}, not a finite number as in the "
                            "training split; fix the cell, or leave it empty to mark it missing"
                        )
                    values[i] = v
                parts.append(values[:, None])
                if column.indicator:
                    parts.append(absent[:, None].astype(np.float64))
            else:
                index = {level: k for k, level in enumerate(column.levels)}
                hot = np.zeros((len(cells), len(column.levels) + column.other))
                for i, c in enumerate(cells):
                    k = index.get(MISSING_LEVEL if absent[i] else c, len(column.levels) if column.other else None)
                    if k is not None:
                        hot[i, k] = 1.0
                parts.append(hot)
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(x), 0), np.float32)

    def to_json(self) -> dict:
        return {"missing": self.missing, "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_json(cls, value: dict) -> TableEncoder:
        try:
            return cls([Column(**c) for c in value["columns"]], value["missing"])
        except (KeyError, TypeError) as e:
            raise UserError(f"the saved table encoding is not readable ({e}); was the file edited?") from None

    def __repr__(self) -> str:
        kinds = Counter(c.kind for c in self.columns)
        return f"TableEncoder({kinds['number']} number and {kinds['category']} category columns -> {self.width})"
