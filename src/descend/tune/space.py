"""Search spaces: a TOML file keyed by the recipe path each dimension sets.

::

    [optimizer.lr]                 # a float, searched on a log scale
    float = [1e-4, 1e-1]
    log = true
    grid = 4                       # points on this axis under the grid sampler (default 3)

    [optimizer.name]
    categorical = ["adamw", "momentum"]

    [optimizer.momentum]           # a conditional dimension: only when optimizer.name = "momentum"
    float = [0.8, 0.99]
    when = { "optimizer.name" = "momentum" }

    [model.hidden]                 # categorical values are any TOML value, lists included
    categorical = [[64], [128, 128]]

    [train.batch_size]
    int = [16, 256]
    log = true                     # or step = 16 on a linear scale

Every dimension maps a point ``u`` of the unit interval to a value (:meth:`Dim.from_unit`), which is how the
random and quasi-random (Halton) searches draw points from ``(seed, trial number)`` alone, and lists its grid
values (:meth:`Dim.grid_values`). Categorical values that Optuna cannot store (lists, tables) travel as their JSON
text and are decoded by :meth:`Dim.value`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import tomllib

from ..config import MAX_DEPTH as config_depth
from ..config import settle_words
from ..errors import UserError, short
from ..options import Boolean, Option, integer

KINDS = ("float", "int", "categorical")
KEYS = (*KINDS, "log", "step", "grid", "when")
# Bounds, so that any file is parsed, checked and searched in bounded time and memory:
MAX_BYTES = 1 << 20  # a space file is a few lines; a megabyte holds thousands of dimensions' worth of text
MAX_DIMS = 64  # far more than a search can resolve: random search's trials cover a few important ones (Bergstra
# & Bengio 2012)
MAX_CHOICES = 256  # each choice is built once to check it; more choices than a search has trials are never tried
MAX_GRID_AXIS = 100  # points on one axis of the grid
EXACT_INT = 2**53  # beyond it float64 (Optuna's internal form of every parameter) skips integers
MAX_STEPS = 10**9  # steps of one axis: finer is a continuous range (and Optuna's exact step check fails at 1e-300)
MAX_GRID = 10_000  # points of the whole grid: each is a trial, queued in the database when the study is made
MAX_DEPTH = config_depth + 2  # a recipe path, the dimension's table and a categorical list around a recipe value
GRID = Option("grid", integer(1, MAX_GRID_AXIS), 3, "points on this axis under the grid sampler")
LOG = Option("log", Boolean(), False, "search on a log scale")


@dataclass(frozen=True)
class Dim:
    """One searched recipe field: ``path`` (``optimizer.lr``), its kind, range or choices, and condition."""

    path: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    grid: int = 3
    when: dict[str, tuple] = field(default_factory=dict)

    @property
    def labels(self) -> tuple:
        """The categorical choices as Optuna stores them (JSON text for lists and tables)."""
        return tuple(_label(c) for c in self.choices)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return optuna.distributions.CategoricalDistribution(self.labels)

    def from_unit(self, u: float) -> Any:
        """The parameter (Optuna's form) at ``u`` ∈ [0, 1): uniform on the (log) scale, snapped to the step."""
        if self.kind == "categorical":
            return self.labels[min(int(u * len(self.choices)), len(self.choices) - 1)]
        if self.kind == "int" and not self.log:
            step = self.step or 1
            count = (self.high - self.low) // step + 1
            return int(self.low + min(int(u * count), count - 1) * step)
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        x = lo + u * (hi - lo)
        x = math.exp(x) if self.log else x
        if self.kind == "int":
            return int(min(max(round(x), self.low), self.high))
        if self.step:
            x = self.low + round((x - self.low) / self.step) * self.step
        return float(min(max(x, self.low), self.high))

    def grid_values(self) -> list:
        """The grid axis: every choice; ``grid`` points evenly spaced on the (log) scale for numbers."""
        if self.kind == "categorical":
            return list(self.labels)
        if self.kind == "int" and (self.high - self.low) // (self.step or 1) + 1 <= self.grid:
            return list(range(self.low, self.high + 1, self.step or 1))
        units = np.linspace(0.0, 1.0, self.grid) if self.grid > 1 else np.array([0.5])
        values = [self.from_unit(float(u)) if u < 1 else self._top() for u in units]
        return list(dict.fromkeys(values))

    def _top(self):
        """The largest value on the axis: ``high``, or the last step at or below it."""
        if self.step:
            top = self.low + ((self.high - self.low) // self.step) * self.step
            return float(top) if self.kind == "float" else int(top)
        return self.high

    def value(self, param: Any) -> Any:
        """The recipe value for a parameter as Optuna holds it."""
        if self.kind == "categorical":
            return self.choices[self.labels.index(param)]
        return param

    def active(self, params: dict[str, Any]) -> bool:
        return all(params.get(parent) in allowed for parent, allowed in self.when.items())

    def probes(self) -> list:
        """Values that show whether the recipe accepts this dimension: both ends, or every choice."""
        return list(self.labels) if self.kind == "categorical" else [self.from_unit(0.0), self._top()]


def _label(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class Space:
    """The dimensions, ordered so that a condition's parent comes before the dimensions it switches on."""

    dims: tuple[Dim, ...]
    source: str = "space"

    def __len__(self) -> int:
        return len(self.dims)

    def __getitem__(self, path: str) -> Dim:
        for d in self.dims:
            if d.path == path:
                return d
        raise KeyError(path)

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(d.path for d in self.dims)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Ask the trial for every active dimension; returns Optuna's parameters."""
        params: dict[str, Any] = {}
        for d in self.dims:
            if not d.active(params):
                continue
            if d.kind == "categorical":
                params[d.path] = trial.suggest_categorical(d.path, d.labels)
            elif d.kind == "int":
                params[d.path] = trial.suggest_int(d.path, d.low, d.high, step=d.step or 1, log=d.log)
            else:
                params[d.path] = trial.suggest_float(d.path, d.low, d.high, step=d.step, log=d.log)
        return params

    def point(self, u: np.ndarray) -> dict[str, Any]:
        """The parameters at a point of the unit cube (one coordinate per dimension, inactive ones unused)."""
        params: dict[str, Any] = {}
        for d, x in zip(self.dims, u):
            if d.active(params):
                params[d.path] = d.from_unit(float(x))
        return params

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point; a conditional axis is only crossed with the points where it is active."""
        points: list[dict[str, Any]] = [{}]
        for d in self.dims:
            axis = d.grid_values()
            if sum(len(axis) if d.active(p) else 1 for p in points) > MAX_GRID:  # refused before it is built
                raise UserError(f"{self.source}: the grid has more than {MAX_GRID:,} points (trials); give fewer "
                                f"grid points per axis, or search with random or qmc, which need no grid")
            points = [q for p in points for q in ([p | {d.path: v} for v in axis] if d.active(p) else [p])]
        return points

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Recipe values (``{"model.hidden": [64, 64]}``) for Optuna's parameters."""
        return {path: self[path].value(p) for path, p in params.items() if path in self.paths}

    def apply(self, raw: dict, params: dict[str, Any]) -> dict:
        """A copy of the raw recipe with the parameters set at their paths."""
        raw = copy.deepcopy(raw)
        for path, value in self.values(params).items():
            set_path(raw, path, value)
        return raw

    def check(self, raw: dict, build: Callable[[dict], Any]) -> None:
        """Build the recipe at every probe value of every dimension (parents set so that it is active).

        ``build(raw)`` validates and builds the recipe and raises :class:`UserError` for what it refuses; the
        first refusal becomes one message naming the dimension and the value.
        """
        for d in self.dims:
            parents = {parent: allowed[0] for parent, allowed in d.when.items()}
            for probe in d.probes():
                try:
                    build(self.apply(raw, parents | {d.path: probe}))
                except UserError as e:
                    shown = d.value(probe)
                    raise UserError(f"{self.source}: [{d.path}] = {shown!r} is refused by the recipe: {e}") from None


def set_path(raw: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{path}: {part!r} is a value in the recipe, not a section")
    node[leaf] = value
    settle_words(node, ".".join(parents), leaf)  # a space may search a section's older word ([regularization.kind])


# ---------------------------------------------------------------------------------------------- parsing
def load(path: str | Path) -> Space:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path} has {path.stat().st_size:,} bytes; a search space is a few lines of TOML "
                            f"(at most {MAX_BYTES:,} bytes)")
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"search space file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read search space {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None
    except RecursionError:  # the parser recurses into nested arrays and inline tables
        raise UserError(f"{path}: values nest too deeply (at most {MAX_DEPTH} levels)") from None
    return parse(raw, source=str(path))


def parse(raw: dict, source: str = "space") -> Space:
    """A :class:`Space` from the TOML tree; any mistake is one :class:`UserError` naming the dimension."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a search space is a TOML table of dimensions, got {short(raw)}")
    _bounded(raw, source)
    dims = [_dim(path, table, source) for path, table in _tables(raw, "", source)]
    if not dims:
        raise UserError(f"{source}: the search space is empty; add a table such as [optimizer.lr] "
                        f"with float = [1e-4, 1e-1]")
    if len(dims) > MAX_DIMS:
        raise UserError(f"{source}: {len(dims)} dimensions; a search space has at most {MAX_DIMS} (a search "
                        f"resolves only a few that matter: fix the others in the recipe)")
    by_path = {d.path: d for d in dims}
    for d in dims:
        for parent, allowed in d.when.items():
            if parent not in by_path or by_path[parent].kind != "categorical":
                raise UserError(f"{source}: [{d.path}] when = {{{parent!r} = ...}}: a condition must name a "
                                f"categorical dimension of this space; categorical ones: "
                                f"{', '.join(p for p, x in by_path.items() if x.kind == 'categorical') or 'none'}")
            refused = [a for a in allowed if a not in by_path[parent].labels]
            if refused:
                raise UserError(f"{source}: [{d.path}] when {parent} = {refused[0]!r}, which is not one of its "
                                f"choices {list(by_path[parent].choices)}")
    return Space(tuple(_ordered(dims, source)), source)


def _bounded(raw: dict, source: str) -> None:
    """Refuse a tree nested deeper than :data:`MAX_DEPTH` before anything recurses into it (no recursion here)."""
    stack: list[tuple[Any, int, str]] = [(raw, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{source}: {path.lstrip('.')[:200]} nests deeper than {MAX_DEPTH} levels; no recipe "
                            f"field does")
        if isinstance(value, dict):
            stack += [(v, depth + 1, f"{path}.{k}") for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]


def _tables(tree: dict, prefix: str, source: str) -> Iterator[tuple[str, dict]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if not key.isidentifier() or not key.isascii():
            raise UserError(f"{source}: [{path[:200]}]: {short(key)} is not a recipe field name (letters, digits "
                            f"and _, as in [optimizer.lr])")
        if not isinstance(value, dict):
            raise UserError(f"{source}: {path} = {value!r} is not a dimension; write a table [{path}] with "
                            f"one of {', '.join(KINDS)}")
        if any(kind in value for kind in KINDS):
            yield path, value
        else:
            yield from _tables(value, f"{path}.", source)


def _dim(path: str, t: dict, source: str) -> Dim:
    where = f"{source}: [{path}]"
    unknown = sorted(set(t) - set(KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    kinds = [k for k in KINDS if k in t]
    if len(kinds) > 1:
        raise UserError(f"{where}: give one of {', '.join(KINDS)}, not {' and '.join(kinds)}")
    kind = kinds[0]
    when = _when(t["when"], where) if "when" in t else {}
    grid = GRID.check(where, t.get("grid", GRID.default))
    if kind == "categorical":
        choices = t["categorical"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: categorical must be a non-empty list of values, got {short(choices)}")
        if len(choices) > MAX_CHOICES:
            raise UserError(f"{where}: {len(choices):,} choices; a categorical has at most {MAX_CHOICES} (search a "
                            f"range of numbers with int = [low, high] or float = [low, high])")
        if any(isinstance(c, float) and math.isnan(c) for c in choices):
            raise UserError(f"{where}: nan is not a choice (no recipe field takes it)")
        if len(set(map(_label, choices))) < len(choices):  # 1, 1.0 and true are one choice to Optuna too
            raise UserError(f"{where}: categorical lists a choice twice (1, 1.0 and true count as one): "
                            f"{short(choices)}")
        extra = [k for k in ("log", "step") if k in t]
        if extra:
            raise UserError(f"{where}: {extra[0]} applies to float and int dimensions, not categorical")
        return Dim(path, kind, choices=tuple(choices), grid=grid, when=when)
    bounds, number = t[kind], (int,) if kind == "int" else (int, float)
    if (not isinstance(bounds, list) or len(bounds) != 2
            or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)):
        raise UserError(f"{where}: {kind} = [low, high] with two {'integers' if kind == 'int' else 'numbers'}, "
                        f"got {short(bounds)}")
    low, high = bounds
    if not all(math.isfinite(b) for b in bounds):
        raise UserError(f"{where}: {kind} = [low, high] needs finite bounds, got {short(bounds)}")
    if kind == "int" and max(abs(low), abs(high)) > EXACT_INT:
        raise UserError(f"{where}: int bounds must lie within ±2**53 ({EXACT_INT:,}), where every integer is exact "
                        f"in the float64 numbers the samplers work in; got {short(bounds)}")
    if not low < high:
        raise UserError(f"{where}: the range [{low}, {high}] is empty; low must be below high")
    log, step = LOG.check(where, t.get("log", LOG.default)), t.get("step")
    if log and low <= 0:
        raise UserError(f"{where}: a log scale needs positive bounds, got low = {low}")
    if step is not None:
        if log:
            raise UserError(f"{where}: step and log cannot be combined (a log scale has no fixed step)")
        if isinstance(step, bool) or not isinstance(step, number) or not step > 0 or step > high - low:
            raise UserError(f"{where}: step must be a positive {kind} no larger than high - low, got {short(step)}")
        if (high - low) / step > MAX_STEPS:
            raise UserError(f"{where}: step {short(step)} cuts [{low}, {high}] into more than {MAX_STEPS:.0e} steps; "
                            "leave step out for a continuous range")
    if kind == "float":
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return Dim(path, kind, low, high, log, step, grid=grid, when=when)


def _when(when: Any, where: str) -> dict[str, tuple]:
    """``when = { "optimizer.name" = "momentum" }`` or ``= { "optimizer.name" = ["momentum", "nesterov"] }``."""
    if not isinstance(when, dict) or not when:
        raise UserError(f"{where}: when must be a table naming a categorical dimension and its choice(s), as "
                        f'when = {{ "optimizer.name" = "momentum" }}; got {short(when)}')
    out = {}
    for parent, allowed in when.items():
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if not allowed or any(isinstance(a, (list, dict)) for a in allowed) or len(allowed) > MAX_CHOICES:
            raise UserError(f"{where}: when {parent!r} = {short(when[parent])}: give one choice of {parent} or a "
                            f"non-empty list of them")
        out[parent] = tuple(allowed)
    return out


def _ordered(dims: list[Dim], source: str) -> list[Dim]:
    """Parents before the dimensions they switch on (declaration order otherwise); cycles are errors."""
    done: list[Dim] = []
    pending = list(dims)
    while pending:
        ready = [d for d in pending if all(p in {x.path for x in done} for p in d.when)]
        if not ready:
            raise UserError(f"{source}: the conditions of {', '.join(d.path for d in pending)} form a cycle")
        done += ready
        pending = [d for d in pending if d not in ready]
    return done
