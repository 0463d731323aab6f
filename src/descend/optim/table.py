"""The optimizers' property table, generated from the code: the classic columns (momentum, adaptive rates, leaky
second moments, bias correction, curvature) read off the parts each named optimizer is made of, and the newer
ones (memory, learning-rate-free, closure, schedule-free) read off the optimizer :func:`create` builds."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import torch

from descend.optim import named
from descend.optim.create import create
from descend.optim.options import OPTIONS, WRAPPED, validate

COLUMNS = ("Tracks first moments (Momentum)", "Tracks second moments (Adaptive learning rates)",
           "Leaky second moments", "Bias correction for moment estimates", "Uses curvature (Hessian)",
           "State per parameter", "Learning-rate-free", "Needs a closure", "Schedule-free")
DISPLAY = {"gd": "SGD", "momentum": "SGD+Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad",
           "rmsprop": "RMSProp", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW", "nadam": "NAdam",
           "newton": "Newton", "lion": "Lion", "muon": "Muon", "adafactor": "Adafactor",
           "schedule_free_sgd": "Schedule-Free SGD", "schedule_free_adamw": "Schedule-Free AdamW",
           "prodigy": "Prodigy", "dadapt_sgd": "D-Adaptation SGD", "sam": "SAM (SGD+Momentum)",
           "lookahead": "Lookahead (Adam)"}
# the classic columns of the methods that are not a chain of parts (first, second, leaky, bias, curvature)
_STANDALONE = {"newton": (False, False, False, False, True), "muon": (True, False, False, False, False),
               "adafactor": (False, True, True, False, False), "schedule_free_sgd": (True, False, False, False, False),
               "schedule_free_adamw": (True, True, True, True, False), "prodigy": (True, True, True, False, False),
               "dadapt_sgd": (False, False, False, False, False)}
_MEMORY = {"newton": "n² (the Hessian)", "muon": "1 (matrices), 2 (the rest, AdamW)",
           "adafactor": "rows + columns per matrix (factored), 1 per vector"}


def properties(name: str, **hyper: Any) -> tuple:
    """The table row of optimizer ``name`` (with options ``hyper``): the classic columns from its chain of parts,
    the others from the optimizer it builds on a small model."""
    base = WRAPPED.get(name, name)
    if base in _STANDALONE:
        classic = _STANDALONE[base]
    else:
        parts = named.chain(base, validate(name, hyper))
        second = [p.second_moment for p in parts if p.second_moment]
        classic = (any(p.first_moment for p in parts), bool(second), "ema" in second,
                   any(p.bias_correction for p in parts), False)
    return classic + _built(name, hyper)


def _built(name: str, hyper: dict[str, Any]) -> tuple:
    """(state tensors per parameter, learning-rate-free, needs a closure, schedule-free) of the built optimizer:
    the state is counted after one step on a tiny model (its tensors shaped like their parameter)."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    opt = create(name, model, **hyper)
    base = WRAPPED.get(name, name)
    if base in _MEMORY:
        memory = _MEMORY[base]
    else:
        w = model[1].weight
        w.grad = torch.ones_like(w)
        if getattr(opt, "needs_closure", False):
            opt.step(lambda: (w.sum() * 0).backward())
        else:
            opt.step()
        memory = str(sum(isinstance(v, torch.Tensor) and v.shape == w.shape for v in opt.state[w].values()))
    return (memory, bool(getattr(opt, "learning_rate_free", False)), bool(getattr(opt, "needs_closure", False)),
            bool(getattr(opt, "schedule_free", False)))


def rows() -> list[tuple[str, tuple]]:
    """(display name, properties) for every optimizer descend has, with default options."""
    return [(DISPLAY[n], properties(n)) for n in OPTIONS]


def table(file: TextIO | None = None) -> None:
    """Print the property table (✓/✗ and the state count), one row per optimizer, one column per property."""
    out = file or sys.stdout
    print("\t".join(("Algorithm",) + COLUMNS), file=out)
    for display, props in rows():
        print("\t".join([display] + [("✓" if p else "✗") if isinstance(p, bool) else p for p in props]), file=out)


def markdown() -> str:
    """The property table as Markdown (the README's copy is checked against it)."""
    lines = ["| Algorithm | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for display, props in rows():
        cells = [("✓" if p else "✗") if isinstance(p, bool) else p for p in props]
        lines.append(f"| {display} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
