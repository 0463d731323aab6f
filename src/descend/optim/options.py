"""The options each named optimizer accepts: type, default, allowed range, and where the default comes from.

This table is the single source of truth: :func:`descend.optim.create` validates against it, the config
schema is written from it, and :func:`describe` prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from descend.errors import UserError

DEFAULT_EXCLUDE = ("bias", "*.bias", "<normalization>")


@dataclass(frozen=True)
class Option:
    """One hyper-parameter: ``kind`` is float, int, bool, str or list (of str)."""

    name: str
    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    doc: str = ""

    def allowed(self) -> str:
        if self.choices:
            return f"one of {list(self.choices)}"
        if self.kind is bool:
            return "true or false"
        if self.kind is list:
            return "a list of parameter-name patterns (fnmatch), '<normalization>' for norm layers"
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {lo}{self.low:g}, {self.high:g}{hi}"

    def check(self, value: Any, optimizer: str) -> Any:
        bad = f"{optimizer} option {self.name} must be {self.allowed()}, got {value!r}"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise UserError(bad)
            return value
        if self.kind is str:
            if value not in (self.choices or ()):
                raise UserError(bad)
            return value
        if self.kind is list:
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise UserError(bad)
            return list(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(bad)
        if self.kind is int and int(value) != value:
            raise UserError(bad)
        value = self.kind(value)
        if not math.isfinite(value):
            raise UserError(bad)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise UserError(bad)
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise UserError(bad)
        return value


def _lr(default: float, origin: str) -> Option:
    return Option("lr", float, default, low=0.0, doc=f"learning rate η ({origin})")


def _rate(name: str, default: float, doc: str) -> Option:
    return Option(name, float, default, low=0.0, high=1.0, high_open=True, doc=doc)


def _eps(default: float, origin: str) -> Option:
    return Option("eps", float, default, low=0.0, doc=f"ε in the denominator ({origin})")


def _decay(default: float = 0.0, mode: str = "l2") -> list[Option]:
    return [
        Option("weight_decay", float, default, low=0.0, doc="λ: L2 coefficient or decoupled decay rate"),
        Option("weight_decay_mode", str, mode, choices=("l2", "decoupled"),
               doc="l2: g += λw before the optimizer; decoupled: w -= ηλw outside it"),
        Option("exclude_from_decay", list, list(DEFAULT_EXCLUDE),
               doc="parameters never decayed: biases and normalisation layers by default"),
    ]


IMPLEMENTATION = Option("implementation", str, "auto", choices=("auto", "torch", "composed"),
                        doc="auto: torch's kernels when exactly a torch algorithm, else composed")
_FORM = Option("momentum_form", str, "heavy_ball", choices=("heavy_ball", "velocity", "ema"),
               doc="v=ρv+g, w-=ηv | v=ρv-ηg, w+=v | v=βv+(1-β)g, w-=ηv")
_PLACEMENT_OUT = Option("eps_placement", str, "outside", choices=("outside", "inside"),
                        doc="u/(√v+ε) (lectures 01, 04, 05; torch) or u/√(v+ε) (lecture 03)")
_ADAM = [
    _rate("beta1", 0.9, "first-moment decay β1 (lecture 03, 04: 0.9)"),
    _rate("beta2", 0.999, "second-moment decay β2 (lecture 03, 04: 0.999)"),
    _eps(1e-8, "lecture 04 Algorithm 1: 1e-8"),
    Option("bias_correction", bool, True, doc="false is lecture 01's 'Adam (almost)'"),
    _PLACEMENT_OUT,
]

OPTIONS: dict[str, list[Option]] = {
    "gd": [_lr(0.01, "descend default")] + _decay(),
    "momentum": [_lr(0.01, "descend default"),
                 _rate("momentum", 0.9, "ρ, friction (lecture 01: 0.9 or 0.99)"),
                 _FORM, Option("nesterov", bool, False, doc="look-ahead variant")] + _decay(),
    "nesterov": [_lr(0.01, "descend default"), _rate("momentum", 0.9, "ρ (lecture 01: 0.9 or 0.99)"),
                 _FORM] + _decay(),
    "adagrad": [_lr(0.01, "torch default"), _eps(1e-10, "torch default; lecture 01 code uses 1e-7"),
                _PLACEMENT_OUT] + _decay(),
    "rmsprop": [_lr(0.01, "torch default"), _rate("rho", 0.99, "decay_rate of the squared-gradient EMA"),
                _eps(1e-8, "torch default; lecture 01 code uses 1e-7"), _PLACEMENT_OUT,
                _rate("momentum", 0.0, "heavy-ball momentum on the preconditioned gradient (torch)")]
    + _decay(),
    "adadelta": [_lr(1.0, "Zeiler 2012 / torch: 1.0"), _rate("rho", 0.9, "decay of both running averages"),
                 _eps(1e-6, "Zeiler 2012 / torch: 1e-6, inside the square roots")] + _decay(),
    "adam": [_lr(1e-3, "lecture 03, 04: 0.001")] + _ADAM
    + [Option("nesterov", bool, False, doc="look-ahead first moment (NAdam without momentum schedule)")]
    + _decay(),
    "adamw": [_lr(1e-3, "lecture 03 Algorithm 2: 0.001")] + _ADAM + _decay(0.01, "decoupled"),
    "nadam": [_lr(2e-3, "Dozat 2016 / torch: 0.002")] + _ADAM
    + [Option("momentum_decay", float, 0.004, low=0.0, doc="ψ of the schedule μ_t = β1(1 − ½·0.96^(tψ))")]
    + _decay(),
    "newton": [_lr(1.0, "lecture 03: α = 1 is the full Newton step"),
               Option("damping", float, 1e-4, low=0.0, low_open=True,
                      doc="smallest curvature trusted: eigenvalues λ of ∇²f are used as max(|λ|, damping)"),
               Option("max_params", int, 5000, low=1, doc="refuse models larger than this (n×n Hessian)")]
    + _decay(),
}
for _name in OPTIONS:
    if _name != "newton":
        OPTIONS[_name].append(IMPLEMENTATION)

ALIASES = {"sgd": "gd"}


def canonical_name(name: Any) -> str:
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in OPTIONS:
        valid = sorted(OPTIONS) + sorted(ALIASES)
        raise UserError(f"unknown optimizer {name!r}; valid names: {valid}")
    return key


def validate(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """Return the full option dict for ``name`` (defaults filled in), or raise UserError on any bad entry."""
    spec = {o.name: o for o in OPTIONS[name]}
    unknown = sorted(set(hyper) - set(spec))
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for optimizer {name!r}; valid options: {sorted(spec)}")
    out = {k: (o.check(hyper[k], name) if k in hyper else (list(o.default) if o.kind is list else o.default))
           for k, o in spec.items()}
    return out


def describe() -> str:
    """The option table as text: optimizer, option, type, default, allowed values, meaning."""
    lines = []
    for name, opts in OPTIONS.items():
        lines.append(f"{name}:")
        for o in opts:
            lines.append(f"  {o.name:<18} {o.kind.__name__:<5} default {o.default!r:<28} {o.allowed()}"
                         f"  — {o.doc}")
    return "\n".join(lines)
