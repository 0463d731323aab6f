"""The confusion matrix of a classification run, with class names that stay readable however long they are.

Long names are shortened to :data:`MAX_CHARS` characters (an ellipsis marks the cut), the predicted-class axis is
written vertically when its names are wider than a cell, and the font shrinks (down to :data:`MIN_FONT` points;
past that only every n-th class is named) until no two tick labels of an axis overlap, as measured by
matplotlib's renderer on the drawn figure.
"""

from __future__ import annotations

import numpy as np

from descend.report import html

MAX_CHARS = 28      # longer class names are cut (the full names are in predictions.json and inference.json)
FONT, MIN_FONT = 7.0, 4.0


def short(name: str) -> str:
    name = " ".join(str(name).split())
    return name if len(name) <= MAX_CHARS else name[:MAX_CHARS - 1] + "…"


def overlapping(labels) -> bool:
    """Whether any two of the (visible, non-empty) tick labels' boxes on the drawn figure overlap."""
    boxes = [t.get_window_extent() for t in labels if t.get_visible() and t.get_text()]
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def figure(matrix, class_names):
    """A heat map of ``matrix`` (rows: true class, columns: predicted), counts written in the cells up to 12
    classes, tick labels that do not overlap."""
    matrix = np.asarray(matrix)
    names = [short(n) for n in class_names]
    k = len(names)
    side = max(4.2, min(12.0, 0.28 * k + 2.5))                   # room for the cells of many classes
    fig, ax = html.figure(side + 0.6, side)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names)
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true")
    if k <= 12:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if v > matrix.max() / 2 else "black")
    size, rotation, every = FONT, 0, 1
    while True:
        ax.tick_params(labelsize=size)
        ax.tick_params(axis="x", labelrotation=rotation)
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for i, label in enumerate(labels):
                label.set_visible(i % every == 0)
        fig.draw_without_rendering()
        x_bad, y_bad = overlapping(ax.get_xticklabels()), overlapping(ax.get_yticklabels())
        if x_bad and rotation == 0:
            rotation = 90                                         # vertical names: a cell's width is a line height
        elif (x_bad or y_bad) and size > MIN_FONT:
            size -= 0.5
        elif x_bad or y_bad:
            every += 1                                            # hundreds of classes: label every n-th one
        else:
            return fig
