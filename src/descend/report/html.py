"""Self-contained HTML pages: figures inlined as base64 PNG, no scripts, no network, no CDN.

Every report (a run, a comparison, a lab) is a list of blocks — headings, paragraphs, tables, figures — put
into one page by :func:`page`. Figures are matplotlib ``Figure`` objects made with :func:`figure` (the Agg
canvas, no pyplot state, so reports can be written from worker processes and threads).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from descend import __version__, atomic

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 640px; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text, td:first-child, th:first-child { text-align: left; }
td { white-space: nowrap; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-size: 0.9em; } .bad { color: #b00; }
"""


def figure(width: float = 6.0, height: float = 3.8, *, ncols: int = 1, nrows: int = 1):
    """A matplotlib Figure on the Agg canvas and its axes (a single Axes, or an array for a grid)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=True)
    return fig, axes


def epoch_axis(*axes) -> None:
    """Label the x axis "epoch" and tick it at whole epochs only (a 3-epoch run shows 1, 2, 3, not 1.25, 1.5)."""
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)


def png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def img(fig, caption: str = "") -> str:
    """A figure block: the PNG inlined as a data URI, with its caption. ``fig`` is a matplotlib Figure or the
    bytes of a PNG file."""
    data = base64.b64encode(fig if isinstance(fig, bytes) else png(fig)).decode("ascii")
    alt = html.escape(caption or "figure", quote=True)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>'


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def paragraph(text: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def preformatted(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"


def fmt(value) -> str:
    """Numbers to 4 significant digits; everything else as text."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _align(value) -> str:
    """Numbers right-aligned (the stylesheet's default), text left-aligned."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return "" if number else ' class="text"'


def table(header: Sequence[str], rows: Iterable[Sequence], caption: str = "") -> str:
    rows = [list(row) for row in rows]
    aligned = rows[0] if rows else [0] * len(header)          # a header aligns as its column's first cell
    head = "".join(f"<th{_align(v)}>{html.escape(str(h))}</th>" for h, v in zip(header, aligned))
    body = "".join("<tr>" + "".join(f"<td{_align(v)}>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, blocks: Iterable[str]) -> str:
    """One complete HTML document from ``blocks`` (already-escaped HTML from the helpers above)."""
    body = "\n".join(blocks)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n"
            f"<p class=\"note\">written by descend {__version__}</p>\n</body></html>\n")


def write(path: str | Path, title: str, blocks: Iterable[str]) -> Path:
    """Write the page atomically (a reader never sees half a report); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, page(title, blocks), what="report")
    return path
