"""``report.html`` for an ensemble directory (``descend ensemble``, a recipe's ``[ensemble]``): the ensemble's and
each member's metrics, how the members are combined, the resolved recipe and the versions — read back from the
files the ensemble wrote (``summary.json``, ``ensemble.json``, ``config.toml``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descend import atomic
from descend.errors import UserError
from descend.report import html
from descend.report.run import write_run_report

MANIFEST = "ensemble.json"


def is_ensemble(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def write_report(path: str | Path) -> Path:
    """Write ``path/report.html`` for a run directory or an ensemble directory; returns its path. A directory
    holding a symbolic link that leads outside it is refused: a report shows the run's own files only."""
    atomic.refuse_links_out(path)
    return write_ensemble_report(path) if is_ensemble(path) else write_run_report(path)


def write_ensemble_report(path: str | Path) -> Path:
    """Write ``path/report.html`` from an ensemble directory's files; returns its path."""
    path = Path(path)
    manifest = atomic.read_json(path / MANIFEST, what="ensemble manifest")
    summary_path = path / "summary.json"
    summary = atomic.read_json(summary_path, what="summary") if summary_path.is_file() else {}
    try:
        recipe = (path / "config.toml").read_text(encoding="utf-8") if (path / "config.toml").is_file() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path / 'config.toml'}: {getattr(e, 'strerror', None) or e}") from None
    members = summary.get("members") or manifest.get("members") or []
    blocks = [html.paragraph(
        f"Ensemble directory {path.resolve()}: {manifest.get('size', len(members))} {manifest.get('kind', '?')} "
        f"of a {manifest.get('task', '?')} model on dataset {summary.get('dataset', '?')}, combined as "
        f"{manifest.get('combine', '?')}; {html.fmt(summary.get('train_seconds'))} s of training.")]
    combined = summary.get("ensemble") or {}
    if combined:
        blocks += [html.heading("Ensemble metrics"), html.table(["metric", "value"], sorted(combined.items()))]
    if members:
        keys = [k for k in dict.fromkeys(k for m in members for k in m) if k != "weights"]
        blocks += [html.heading("Members"),
                   html.table(["member", *keys], [[i, *(m.get(k) for k in keys)] for i, m in enumerate(members)])]
        shown = [k for k in combined if isinstance(combined[k], (int, float)) and all(
            isinstance(m.get(k), (int, float)) for m in members)]
        if shown:
            blocks.append(html.img(members_figure(members, combined, shown),
                                   "each member and the ensemble, on the split the ensemble was evaluated on"))
    blocks += [html.heading("Versions"),
               html.table(["package", "version"], sorted(summary.get("versions", {}).items())),
               html.heading("Resolved recipe (config.toml)"), html.preformatted(recipe)]
    return html.write(path / "report.html", f"descend ensemble: {summary.get('name') or path.name}", blocks)


def members_figure(members: list[dict], combined: dict, keys: list[str]):
    """One panel per metric: a bar per member, and the ensemble's value as a line across them."""
    fig, axes = html.figure(3.2 * len(keys), 3.0, ncols=len(keys))
    for ax, key in zip(np.atleast_1d(axes), keys):
        ax.bar(range(len(members)), [m[key] for m in members], color="C0", label="member")
        ax.axhline(combined[key], color="C3", lw=2, label="ensemble")
        ax.set(title=key, xlabel="member")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    return fig
