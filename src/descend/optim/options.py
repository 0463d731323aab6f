"""The options each named optimizer accepts: type, default, allowed range, and where the default comes from.

This table is the single source of truth: :func:`descend.optim.create` validates against it, the config
schema is written from it, and :func:`describe` prints it.
"""

from __future__ import annotations

from typing import Any

from descend.errors import UserError
from descend.options import Boolean, OneOf, Option, Patterns, integer, number
from descend.options import describe as describe_table
from descend.options import validate as validate_table

DEFAULT_EXCLUDE = ("bias", "*.bias", "<normalization>")


def _lr(default: float, origin: str) -> Option:
    return Option("lr", number(0), default, doc=f"learning rate η ({origin})")


def _rate(name: str, default: float, doc: str) -> Option:
    return Option(name, number(0, 1, closed="left"), default, doc=doc)


def _eps(default: float, origin: str) -> Option:
    return Option("eps", number(0), default, doc=f"ε in the denominator ({origin})")


def _decay(default: float = 0.0, mode: str = "l2") -> list[Option]:
    return [
        Option("weight_decay", number(0), default, doc="λ: L2 coefficient or decoupled decay rate"),
        Option("weight_decay_mode", OneOf("l2", "decoupled"), mode,
               doc="l2: g += λw before the optimizer; decoupled: w -= ηλw outside it"),
        Option("exclude_from_decay", Patterns(), list(DEFAULT_EXCLUDE),
               doc="parameters never decayed: biases and normalisation layers by default"),
    ]


IMPLEMENTATION = Option("implementation", OneOf("auto", "torch", "composed"), "auto",
                        doc="auto: torch's kernels when exactly a torch algorithm, else composed")
_FORM = Option("momentum_form", OneOf("heavy_ball", "velocity", "ema"), "heavy_ball",
               doc="v=ρv+g, w-=ηv | v=ρv-ηg, w+=v | v=βv+(1-β)g, w-=ηv")
_PLACEMENT_OUT = Option("eps_placement", OneOf("outside", "inside"), "outside",
                        doc="outside: u/(√v+ε) (Kingma & Ba 2015, torch); inside: u/√(v+ε)")
_ADAM = [
    _rate("beta1", 0.9, "first-moment decay β1 (Kingma & Ba 2015: 0.9)"),
    _rate("beta2", 0.999, "second-moment decay β2 (Kingma & Ba 2015: 0.999)"),
    _eps(1e-8, "Kingma & Ba 2015: 1e-8"),
    Option("bias_correction", Boolean(), True, doc="false leaves the moments biased towards 0 ('Adam, almost')"),
    _PLACEMENT_OUT,
]

OPTIONS: dict[str, list[Option]] = {
    "gd": [_lr(0.01, "descend default")] + _decay(),
    "momentum": [_lr(0.01, "descend default"),
                 _rate("momentum", 0.9, "ρ, friction (0.9 or 0.99 are usual)"),
                 _FORM, Option("nesterov", Boolean(), False, doc="look-ahead variant")] + _decay(),
    "nesterov": [_lr(0.01, "descend default"), _rate("momentum", 0.9, "ρ, friction (0.9 or 0.99 are usual)"),
                 _FORM] + _decay(),
    "adagrad": [_lr(0.01, "torch default"), _eps(1e-10, "torch default; 1e-7 is also common"),
                _PLACEMENT_OUT] + _decay(),
    "rmsprop": [_lr(0.01, "torch default"), _rate("rho", 0.99, "decay_rate of the squared-gradient EMA"),
                _eps(1e-8, "torch default; 1e-7 is also common"), _PLACEMENT_OUT,
                _rate("momentum", 0.0, "heavy-ball momentum on the preconditioned gradient (torch)")]
    + _decay(),
    "adadelta": [_lr(1.0, "Zeiler 2012 / torch: 1.0"), _rate("rho", 0.9, "decay of both running averages"),
                 _eps(1e-6, "Zeiler 2012 / torch: 1e-6, inside the square roots")] + _decay(),
    "adam": [_lr(1e-3, "Kingma & Ba 2015: 0.001")] + _ADAM
    + [Option("nesterov", Boolean(), False, doc="look-ahead first moment (NAdam without momentum schedule)")]
    + _decay(),
    "adamw": [_lr(1e-3, "Loshchilov & Hutter 2019: 0.001")] + _ADAM + _decay(0.01, "decoupled"),
    "nadam": [_lr(2e-3, "Dozat 2016 / torch: 0.002")] + _ADAM
    + [Option("momentum_decay", number(0), 0.004, doc="ψ of the schedule μ_t = β1(1 − ½·0.96^(tψ))")]
    + _decay(),
    "newton": [_lr(1.0, "α = 1 is the full Newton step"),
               Option("damping", number(0, closed="right"), 1e-4,
                      doc="smallest curvature trusted: eigenvalues λ of ∇²f are used as max(|λ|, damping)"),
               Option("max_params", integer(1), 5000, doc="refuse models larger than this (n×n Hessian)")]
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
    return validate_table(f"optimizer {name!r}", OPTIONS[name], hyper)


def describe() -> str:
    """The option table as text: optimizer, option, default, allowed values, meaning."""
    return "\n".join(describe_table(opts, f"optimizer {name!r}") for name, opts in OPTIONS.items())
