"""What a fit returns: one dict of logged values per epoch, readable by row or by column."""

from __future__ import annotations

import math

from ..monitor import resolve_mode
from ..optional import require


class History(list):
    """A list of per-epoch dicts (``history[-1]["val_loss"]``) that also gives columns (``history["val_loss"]``)."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row.get(key, math.nan) for row in self]
        return super().__getitem__(key)

    def to_pandas(self):
        """The history as a pandas DataFrame, one row per epoch (``pd.DataFrame(history)`` gives the same)."""
        return require("pandas", "History.to_pandas()").DataFrame(list(self))

    def best(self, metric: str, mode: str = "auto") -> dict:
        """The epoch row where ``metric`` was best; ``mode="auto"`` as :func:`descend.monitor.resolve_mode`."""
        rows = [row for row in self if metric in row and not math.isnan(row[metric])]
        if not rows:
            raise KeyError(f"no epoch logged {metric!r}")
        mode = resolve_mode("History.best", metric, mode)
        pick = max if mode == "max" else min
        return pick(rows, key=lambda row: row[metric])
