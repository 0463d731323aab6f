"""The run report's confusion matrix keeps its class names readable: no two tick labels overlap on the drawn
figure (boxes measured by matplotlib's renderer), for few and many classes, short and long names."""

from __future__ import annotations

import numpy as np
import pytest

from descend.report import confusion, run


def _boxes(labels):
    return [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]


def _disjoint(boxes):
    return not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("names", [
    ["0", "1", "2"],
    [f"a rather long class name number {i}" for i in range(10)],
    ["Pinot noir from the Côte de Nuits", "Barolo", "a name that goes on and on and on and on", "x"],
    [f"category-{i:03d}-with-a-long-suffix" for i in range(40)],
], ids=["digits", "ten-long", "mixed", "forty-long"])
def test_confusion_matrix_tick_labels_do_not_overlap(names):
    k = len(names)
    matrix = np.random.default_rng(0).integers(0, 50, size=(k, k))
    fig = run.predictions_figure({"task": "classification", "confusion": matrix.tolist(), "class_names": names})
    fig.draw_without_rendering()
    ax = fig.axes[0]
    x, y = _boxes(ax.get_xticklabels()), _boxes(ax.get_yticklabels())
    assert _disjoint(x) and _disjoint(y)
    assert len(x) == len(y) and len(x) >= min(k, 10)           # names are thinned out only for many classes
    figure_box = fig.bbox
    assert all(figure_box.x0 - 1 <= b.x0 and b.x1 <= figure_box.x1 + 1 and figure_box.y0 - 1 <= b.y0
               for b in x + y)                                   # nothing drawn off the page
    shown = [t.get_text() for t in ax.get_yticklabels() if t.get_visible()]
    assert all(n == s or (s.endswith("…") and n.startswith(s[:-1])) for n, s in zip(names, shown))


def test_long_names_are_cut_with_an_ellipsis():
    assert confusion.short("barolo") == "barolo"
    cut = confusion.short("x" * 100)
    assert len(cut) == confusion.MAX_CHARS and cut.endswith("…")
