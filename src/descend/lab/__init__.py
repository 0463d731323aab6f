"""Reproduce the classic training experiments as reports, and compare training variants fairly over seeds.

- :func:`bias_variance` / :func:`decompose` — the bias-variance(-noise) decomposition for squared, 0-1 and
  cross-entropy loss, with the variance split into initialisation and data parts and bootstrap intervals.
"""

from __future__ import annotations

from descend.lab.decomposition import Decomposition, bias_variance, decompose

__all__ = ["Decomposition", "bias_variance", "decompose"]
