"""Hyper-parameter search and cross-validation through Optuna: grid, random, quasi-random (Halton), TPE and
Gaussian-process samplers, median / Hyperband / Wilcoxon pruning, SQLite or PostgreSQL studies shared by many
workers, reproducible from a seed, and stratified k-fold cross-validation with per-fold scaling."""

from .cv import Folds, cross_validate
from .search import search
from .space import Dim, Space
from .space import load as load_space

__all__ = ["Dim", "Folds", "Space", "cross_validate", "load_space", "search"]
