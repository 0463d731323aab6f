"""A fit at a glance, as HTML for a notebook: what ``Result`` and ``LoadedRun`` show in Jupyter (``_repr_html_``).

The loss and first metric per epoch (train and validation, as in ``report.html``) and a summary table: status,
epochs, the best epoch of the monitored value, the final metrics, training time and parameter count.
"""

from __future__ import annotations

from descend.report import html
from descend.report.run import curves_figure


def summary_html(title: str, rows: list[dict], summary: dict) -> str:
    """``rows``: the history (one dict per epoch); ``summary``: what a run's ``summary.json`` holds."""
    best = summary.get("best") or {}
    facts = [("status", summary.get("status")), ("epochs", summary.get("epochs_run", len(rows))),
             (f"best {best.get('monitor', 'value')}", best.get("best_value")), ("best epoch", best.get("best_epoch")),
             *[(name, value) for name, value in (summary.get("final") or {}).items()],
             ("training seconds", summary.get("train_seconds")), ("parameters", summary.get("parameters"))]
    blocks = [html.heading(title, 3)]
    if rows:
        blocks.append(html.img(curves_figure(rows), caption="loss and metric per epoch, train and validation"))
    blocks.append(html.table(["", "value"], [(k, v) for k, v in facts if v is not None]))
    return f'<div class="descend-run">{"".join(blocks)}</div>'
