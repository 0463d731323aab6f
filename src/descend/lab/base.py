"""What a lab returns (measured numbers, figures, tables, a short text) and how it becomes a report."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from descend import atomic
from descend.report import html
from descend.train import threads


@dataclass
class LabResult:
    """One lab's outcome. ``claim``: what the experiment shows and who first showed it; ``measured``: JSON-able
    numbers (the report and ``lab.json`` print them, the tests assert the claim on them); ``figures``: (caption,
    matplotlib Figure); ``tables``: (caption, header, rows); ``findings``: one sentence per measured result."""

    name: str
    title: str
    claim: str
    measured: dict
    figures: list[tuple[str, object]] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list]]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    quick: bool = False
    seconds: float = 0.0

    def blocks(self) -> list[str]:
        mode = " (quick mode: fewer repetitions and steps)" if self.quick else ""
        out = [html.heading("What it shows"), html.paragraph(self.claim), html.heading("What was measured"),
               *(html.paragraph(f) for f in self.findings),
               html.paragraph(f"Measured in {self.seconds:.1f} s{mode}.", "note")]
        out += [html.img(fig, caption) for caption, fig in self.figures]
        for caption, header, rows in self.tables:
            out += [html.heading(caption, 3), html.table(header, rows)]
        return out

    def write(self, out: str | Path) -> Path:
        """``out/report.html`` and ``out/lab.json`` (the measured numbers); returns the report's path."""
        out = Path(out)
        path = html.write(out / "report.html", f"descend lab: {self.title}", self.blocks())
        atomic.write_text(out / "lab.json", json.dumps(
            {"name": self.name, "title": self.title, "quick": self.quick, "seconds": round(self.seconds, 3),
             "claim": self.claim, "findings": self.findings, "measured": jsonable(self.measured)}, indent=2) + "\n",
            what="lab results")
        return path


def jsonable(value):
    """Numbers, numpy scalars and arrays, nested dicts and lists -> plain JSON values (non-finite -> None)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def timed(fn: Callable[..., LabResult], quick: bool) -> LabResult:
    """Run a lab on one thread: its steps are tiny (20-sample sets, 2-D surfaces, 100-sample random features),
    the case where descend's thread policy (:mod:`descend.train.threads`) picks one thread, since a second one only
    waits at every op's barrier, and on a busy machine that wait dominates (``benchmarks.threads`` measures it)."""
    started = time.perf_counter()
    with threads.fixed(1):
        result = fn(quick=quick)
    result.quick, result.seconds = quick, time.perf_counter() - started
    return result
