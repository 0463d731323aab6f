"""``doctor.json`` and ``doctor.html``: the findings with their evidence, and each evidence curve as a small
inline PNG (matplotlib, base64), so the page is one self-contained file."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from .. import atomic
from .findings import Diagnosis

COLORS = {"error": "#b00020", "warning": "#b36b00", "info": "#35608a"}


def write(diagnosis: Diagnosis, out: Path) -> tuple[Path, Path]:
    """Both files, each written atomically (:mod:`descend.atomic`): never torn, never through a link."""
    data, page = out / "doctor.json", out / "doctor.html"
    atomic.write_text(data, json.dumps(diagnosis.to_dict(), indent=2) + "\n", what="doctor's report")
    atomic.write_text(page, render(diagnosis), what="doctor's report")
    return data, page


def render(d: Diagnosis) -> str:
    verdict = "healthy: no error-level finding" if d.healthy else f"{len(d.ids('error'))} error-level finding(s)"
    parts = [f"<h1>descend doctor: {_e(d.name)}</h1>",
             f"<p><b>{verdict}</b> — {d.seconds:.0f} s of a {d.budget:.0f} s budget.</p>"]
    for f in d.findings:
        evidence = json.dumps(f.to_dict()["evidence"], indent=1)
        parts.append(f'<div class="f" style="border-color:{COLORS[f.severity]}"><h3>{f.severity}: {_e(f.id)}</h3>'
                     f"<p>{_e(f.message)}</p>"
                     + (f"<p><b>Fix:</b> {_e(f.fix.text)}</p>" if f.fix else "")
                     + (f"<p><code>{_e(json.dumps(f.fix.changes))}</code></p>" if f.fix and f.fix.changes else "")
                     + (_img(f.plot) if f.plot else "")
                     + f"<details><summary>evidence</summary><pre>{_e(evidence)}</pre></details></div>")
    shown = {id(f.plot) for f in d.findings if f.plot}
    rest = [p for p in d.plots.values() if id(p) not in shown]
    if rest:
        parts.append("<h2>Evidence</h2>" + "".join(_img(p) for p in rest))
    rows = "".join(f"<tr><td>{_e(c.id)}</td><td>{c.status}</td><td>{c.seconds:.1f}</td><td>{_e(c.note)}</td></tr>"
                   for c in d.checks)
    parts.append(f"<h2>Checks</h2><table><tr><th>check</th><th>status</th><th>s</th><th>note</th></tr>{rows}</table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}.f{border-left:6px solid;padding:0 1em;"
             "margin:1em 0}img{max-width:26em;display:inline-block}td,th{padding:0 .6em;text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>doctor {_e(d.name)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _img(plot: dict) -> str:
    return f'<img alt="{_e(plot.get("title", ""))}" src="data:image/png;base64,{png(plot)}">'


def png(plot: dict) -> str:
    """A small line plot as base64 PNG: ``series`` {label: (xs, ys)}, optional log axes and vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8), dpi=90)
    try:
        for label, (xs, ys) in plot["series"].items():
            ax.plot(xs, ys, label=label, lw=1.2)
        for label, x in plot.get("vlines", {}).items():
            ax.axvline(x, color="k", ls="--", lw=1, label=label)
        ax.set_xscale("log" if plot.get("xlog") else "linear")
        ax.set_yscale("log" if plot.get("ylog") else "linear")
        ax.set(title=plot.get("title", ""), xlabel=plot.get("xlabel", ""), ylabel=plot.get("ylabel", ""))
        ax.title.set_fontsize(9)
        if len(plot["series"]) + len(plot.get("vlines", {})) > 1:
            ax.legend(fontsize=7)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _e(text: str) -> str:
    return html.escape(str(text))
