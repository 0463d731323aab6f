"""The optimizers' property table (momentum, adaptive rates, leaky second moments, bias correction,
curvature), generated from the parts each named optimizer is made of."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from descend.optim import named
from descend.optim.options import OPTIONS, validate
from descend.optim.parts import BiasCorrection, FirstMoment, SecondMoment

COLUMNS = ("Tracks first moments (Momentum)", "Tracks second moments (Adaptive learning rates)",
           "Leaky second moments", "Bias correction for moment estimates", "Uses curvature (Hessian)")
DISPLAY = {"gd": "SGD", "momentum": "SGD+Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad",
           "rmsprop": "RMSProp", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW", "nadam": "NAdam",
           "newton": "Newton"}


def properties(name: str, **hyper: Any) -> tuple[bool, bool, bool, bool, bool]:
    """The table row of optimizer ``name`` (with options ``hyper``), read off its chain of parts."""
    if name == "newton":
        return (False, False, False, False, True)
    parts = named.chain(name, validate(name, hyper))
    second = [p for p in parts if isinstance(p, SecondMoment)]
    return (any(isinstance(p, FirstMoment) for p in parts), bool(second),
            any(p.kind == "ema" for p in second), any(isinstance(p, BiasCorrection) for p in parts), False)


def rows() -> list[tuple[str, tuple[bool, ...]]]:
    """(display name, properties) for every optimizer descend has, with default options."""
    return [(DISPLAY[n], properties(n)) for n in OPTIONS]


def table(file: TextIO | None = None) -> None:
    """Print the property table (✓/✗), one row per optimizer, one column per property."""
    out = file or sys.stdout
    print("\t".join(("Algorithm",) + COLUMNS), file=out)
    for display, props in rows():
        print("\t".join([display] + ["✓" if p else "✗" for p in props]), file=out)
