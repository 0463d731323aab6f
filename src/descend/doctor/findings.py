"""What the doctor hands back: findings (ranked), the checks that ran, and the time budget they shared.

A :class:`Finding` has a stable ``id``, a ``severity`` (``error`` > ``warning`` > ``info``), a one-line
``message``, the ``evidence`` (numbers) it rests on, and a ``fix``: the recipe change to make, as text and as
dotted-path ``changes`` that :mod:`descend.doctor.fix` can apply (``{"optimizer.lr": 3e-4}``). A
:class:`Check` records one experiment: its status (``ok``, ``finding``, ``cut_short``, ``skipped``, ``failed``)
and seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")

# Presentation and ranking order within a severity: data first, then the flowchart's stages (Karpathy's recipe:
# become one with the data, set up the end-to-end skeleton, overfit, regularize).
ORDER = ("data_nan", "label_out_of_range", "train_test_leakage", "unscaled_inputs", "unscaled_targets",
         "too_few_samples", "class_imbalance", "initial_loss_off", "lr_too_high", "exploding_gradients",
         "lr_too_low", "vanishing_gradients", "dead_units", "saturated_units", "cannot_overfit_small_subset",
         "input_independent", "worse_than_mean", "linear_model_better", "aggressive_clipping", "noisy_loss",
         "underfitting", "overfitting")


@dataclass
class Fix:
    """A remedy: ``text`` for a person, ``changes`` (dotted recipe path -> new value; None removes the field)."""

    text: str
    changes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"text": self.text, "changes": self.changes}


@dataclass
class Finding:
    id: str
    severity: str
    message: str
    evidence: dict[str, Any]
    fix: Fix | None = None
    plot: dict | None = None  # {"title", "xlabel", "ylabel", "xlog", "ylog", "series": {label: (xs, ys)}}

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "message": self.message,
                "evidence": _plain(self.evidence), "fix": self.fix.to_dict() if self.fix else None}


@dataclass
class Check:
    id: str
    status: str
    seconds: float
    note: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "status": self.status, "seconds": round(self.seconds, 3),
                **({"note": self.note} if self.note else {})}


def rank(findings: list[Finding]) -> list[Finding]:
    """Most severe first; within a severity, in the flowchart's order (data, stage 1, stage 2)."""
    def key(f: Finding) -> tuple[int, int]:
        return SEVERITIES.index(f.severity), ORDER.index(f.id) if f.id in ORDER else len(ORDER)
    return sorted(findings, key=key)


@dataclass
class Diagnosis:
    """The ranked findings of :func:`descend.doctor.examine`, the checks that ran and the evidence curves."""

    findings: list[Finding]
    checks: list[Check]
    seconds: float
    budget: float
    name: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)  # what each check measured, finding or not
    plots: dict[str, dict] = field(default_factory=dict)    # the evidence curves, shown in doctor.html

    @property
    def healthy(self) -> bool:
        """No error-level finding."""
        return not any(f.severity == "error" for f in self.findings)

    def ids(self, severity: str | None = None) -> list[str]:
        return [f.id for f in self.findings if severity is None or f.severity == severity]

    def to_dict(self) -> dict:
        return {"name": self.name, "healthy": self.healthy, "seconds": round(self.seconds, 3),
                "budget": self.budget, "findings": [f.to_dict() for f in self.findings],
                "checks": [c.to_dict() for c in self.checks], "evidence": _plain(self.evidence)}

    def summary(self) -> str:
        """A few lines for a terminal: the verdict, each finding with its fix, the checks' times."""
        counts = {s: len(self.ids(s)) for s in SEVERITIES}
        verdict = ("healthy: no error-level finding" if self.healthy else
                   f"{counts['error']} error(s)") + f", {counts['warning']} warning(s), {counts['info']} note(s)"
        lines = [f"doctor {self.name}: {verdict} in {self.seconds:.0f}s (budget {self.budget:.0f}s)"]
        for f in self.findings:
            lines.append(f"  {f.severity.upper():7} {f.id}: {f.message}")
            if f.fix is not None:
                lines.append(f"          fix: {f.fix.text}")
        lines += [f"  evidence: {line}" for line in evidence_lines(self.evidence)]
        cut = [c.id for c in self.checks if c.status in ("cut_short", "skipped", "failed")]
        timings = ", ".join(f"{c.id} {c.seconds:.1f}s" for c in self.checks)
        lines.append(f"  checks: {timings}")
        if cut:
            lines.append("  not complete: " + ", ".join(
                f"{c.id} ({c.status}{': ' + c.note if c.note else ''})" for c in self.checks if c.id in cut))
        return "\n".join(lines)


#: (check, key, line): the line shown when the check's evidence holds ``key``, made from that evidence.
_EVIDENCE_LINES: tuple[tuple[str, str, Callable[[dict], str]], ...] = (
    ("initial_loss", "initial_loss",
     lambda init: f"loss at init {init['initial_loss']:.3g} (expected about {init['expected']:.3g})"),
    ("small_subset", "final_loss",
     lambda sub: f"tiny batch of {sub['samples']}: loss {sub['initial_loss']:.3g} -> {sub['final_loss']:.3g} in "
                 f"{sub['steps']} steps"),
    ("lr_range", "verdict", lambda lr: f"LR range test: {lr['verdict']}"),
    ("lr_range", "suggestion",
     lambda lr: f"LR range test suggests {lr['suggestion']:.2g} ({lr['suggestion_low']:.2g}-"
                f"{lr['suggestion_high']:.2g} over {lr['seeds']} seeds)"),
    ("short_run", "final_train_loss",
     lambda run: f"short run: train loss {run['final_train_loss']:.3g}"
                 + (f", val {run['final_val_loss']:.3g}" if "final_val_loss" in run else "")
                 + f" after {run['epochs_run']} epoch(s)"),
    ("zeroed_inputs", "zeroed_inputs",
     lambda z: f"best {z['compared']} {z['with_inputs']:.3g} with the inputs, {z['zeroed_inputs']:.3g} "
               "with them zeroed"),
)


def evidence_lines(e: dict) -> list[str]:
    """What the checks measured, one short line each (shown whether or not they found anything)."""
    return [line(e[check]) for check, key, line in _EVIDENCE_LINES if key in e.get(check, {})]


class Budget:
    """Wall-clock seconds shared by the checks: each asks for its share of what is left.

    ``share(weight)`` gives a deadline: ``weight`` / (sum of the weights still to run) of the seconds left, so time
    a fast check leaves unused goes to the checks after it.
    """

    def __init__(self, seconds: float, weights: dict[str, float]) -> None:
        self.seconds = float(seconds)
        self.start = time.perf_counter()
        self.pending = dict(weights)

    def left(self) -> float:
        return max(0.0, self.seconds - (time.perf_counter() - self.start))

    def share(self, check: str) -> float:
        """The deadline (a ``time.perf_counter()`` value) for ``check``; the check is then no longer pending."""
        total = sum(self.pending.values()) or 1.0
        weight = self.pending.pop(check, 0.0)
        return time.perf_counter() + self.left() * weight / total


def _plain(value: Any) -> Any:
    """JSON-able: floats rounded to 4 significant digits, NaN/inf as strings, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return float(f"{value:.4g}") if math.isfinite(value) else str(value)
    if hasattr(value, "item"):
        return _plain(value.item())
    return str(value)
