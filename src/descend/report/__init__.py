"""Plots (matplotlib, Agg) and self-contained HTML reports for runs, comparisons and labs."""

from __future__ import annotations

from descend.report import html

__all__ = ["html"]
