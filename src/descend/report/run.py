"""``report.html`` for a run directory: learning curves, learning rate, gradient norms, confusion matrix or
predicted vs true, the resolved recipe, timings and versions — all read back from the files the run wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from descend import atomic
from descend.errors import UserError
from descend.report import confusion, html
from descend.train.metric_fns import predicted_class

MAX_POINTS = 2000  # predicted-vs-true points kept in predictions.json


def predictions(trainer, split, task: str, class_names=None) -> dict:
    """What the report needs of the model's predictions on ``split``: the confusion matrix (classification) or
    up to 2000 (true, predicted) pairs of the first output (regression)."""
    out = trainer.predict(split.x)
    if task == "classification":
        k = int(split.num_classes or out.shape[1])
        guess = predicted_class(out)
        matrix = torch.zeros(k, k, dtype=torch.long)
        matrix.index_put_((split.y.reshape(-1).cpu().long(), guess.cpu()), torch.ones_like(guess.cpu()),
                          accumulate=True)
        return {"task": task, "confusion": matrix.tolist(), "class_names": list(class_names or range(k))}
    true, pred = split.y.reshape(len(split), -1), out.reshape(len(split), -1)
    if split.target_scaler is not None:  # standardised targets: the plot is in their own units
        true, pred = (split.target_scaler.inverse_transform(v.float().cpu()) for v in (true, pred))
    true, pred = true[:, 0], pred[:, 0]
    return {"task": task, "y_true": true[:MAX_POINTS].cpu().tolist(), "y_pred": pred[:MAX_POINTS].cpu().tolist()}


def write_predictions(run_dir: Path, trainer, data) -> None:
    """``predictions.json`` from the test split (else validation, else training) of a finished run."""
    for name in ("test", "val", "train"):
        split = getattr(data, name)
        if split is not None and len(split):
            value = {"split": name, **predictions(trainer, split, data.info.task, data.info.class_names)}
            atomic.write_json(Path(run_dir) / "predictions.json", value, what="predictions")
            return


def _read(run_dir: Path) -> tuple[list[dict], dict, dict | None, str]:
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir} is not a run directory (no metrics.jsonl); give the directory `descend run` "
                        "wrote")
    rows = atomic.read_jsonl(run_dir / "metrics.jsonl", what="metrics log")
    summary_path, pred_path, recipe = run_dir / "summary.json", run_dir / "predictions.json", run_dir / "config.toml"
    summary = atomic.read_json(summary_path, what="summary") if summary_path.is_file() else {}
    preds = atomic.read_json(pred_path, what="predictions file") if pred_path.is_file() else None
    try:
        return rows, summary, preds, recipe.read_text(encoding="utf-8") if recipe.is_file() else ""
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {recipe}: {getattr(e, 'strerror', None) or e}") from None


def column(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of ``key`` in the rows that logged it (one row per epoch, numbered from 1 as logged)."""
    kept = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    if not kept:
        return np.array([]), np.array([])
    epochs, values = zip(*kept)
    return np.array(epochs), np.array(values, dtype=float)


def metric_names(rows: list[dict]) -> list[str]:
    """The metrics logged for the training split (``train_loss``, ``train_accuracy``, ...), without the prefix."""
    keys = dict.fromkeys(k for r in rows for k in r)
    return [k[len("train_"):] for k in keys if k.startswith("train_")]


def curves_figure(rows: list[dict]):
    """Loss and the first other metric, train and validation, per epoch."""
    names = metric_names(rows)
    shown = ["loss", *[n for n in names if n != "loss"][:1]]
    fig, axes = html.figure(5.2 * len(shown), 3.5, ncols=len(shown))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, shown):
        for split, style in (("train", "o-"), ("val", "s-")):
            epochs, values = column(rows, f"{split}_{name}")
            if len(values):
                ax.plot(epochs, values, style, ms=3, label=f"{split} {name}")
        ax.set(ylabel=name)
        html.epoch_axis(ax)
        if name == "loss" and len(column(rows, "train_loss")[1]) and np.nanmin(column(rows, "train_loss")[1]) > 0:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def series_figure(rows: list[dict], key: str, label: str):
    epochs, values = column(rows, key)
    fig, ax = html.figure(5.2, 3.0)
    ax.plot(epochs, values, "o-", ms=3)
    ax.set(ylabel=label)
    html.epoch_axis(ax)
    ax.grid(alpha=0.3)
    return fig


CONTROL_MARKS = (("control_lr_factor", lambda v: f"lr x{v:g}"), ("control_add_epochs", lambda v: f"+{v:g} epochs"),
                 ("control_stop", lambda v: "stop"))


def lr_figure(rows: list[dict]):
    """The learning rates that ran, as logged with each epoch (its last step's rate): a babysitting change, a
    divergence rollback, a stop or a resume with more epochs shows where it happened, unlike the schedule planned
    at the start. Babysitting commands are marked at the epoch after which they took effect."""
    fig = series_figure(rows, "lr", "learning rate (each epoch's last step)")
    ax = fig.axes[0]
    for row in rows:
        said = [mark(row[key]) for key, mark in CONTROL_MARKS if isinstance(row.get(key), (int, float))]
        if said and isinstance(row.get("epoch"), (int, float)):
            ax.axvline(row["epoch"] + 0.5, color="0.6", ls="--", lw=1)
            ax.annotate(", ".join(said), (row["epoch"] + 0.5, 1), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=7, color="0.3")
    return fig


def predictions_figure(preds: dict):
    if preds["task"] == "classification":
        return confusion.figure(preds["confusion"], preds["class_names"])
    true, pred = np.array(preds["y_true"]), np.array(preds["y_pred"])
    fig, ax = html.figure(4.6, 4.2)
    ax.scatter(true, pred, s=8, alpha=0.6)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], "k--", lw=1, label="predicted = true")
    ax.set(xlabel="true", ylabel="predicted")
    ax.legend(fontsize=8)
    return fig


def write_run_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files; returns its path."""
    run_dir = Path(run_dir)
    rows, summary, preds, recipe = _read(run_dir)
    blocks = []
    status = summary.get("status", "unknown")
    blocks.append(html.paragraph(f"Run directory {run_dir.resolve()} — status {status}, {len(rows)} epochs, "
                                 f"dataset {summary.get('dataset', '?')}.", "bad" if status == "diverged" else ""))
    if status == "diverged":
        blocks.append(html.paragraph(summary.get("error", ""), "bad"))
    final = summary.get("final", {})
    if final:
        blocks += [html.heading("Final metrics"), html.table(["metric", "value"], sorted(final.items()))]
    best = summary.get("best")
    if best:
        blocks.append(html.paragraph(f"Best {best.get('monitor')}: {html.fmt(best.get('best_value'))} at epoch "
                                     f"{best.get('best_epoch')}."))
    if rows:
        blocks += [html.heading("Learning curves"), html.img(curves_figure(rows), "train and validation per epoch")]
        if len(column(rows, "lr")[1]):
            blocks.append(html.img(lr_figure(rows), "the learning rate that ran in each epoch, as logged"))
        if len(column(rows, "grad_norm")[1]):
            blocks.append(html.img(series_figure(rows, "grad_norm", "gradient norm (before clipping)"),
                                   "gradient norm"))
    if preds is not None:
        title = "Confusion matrix" if preds["task"] == "classification" else "Predicted vs true"
        blocks += [html.heading(f"{title} ({preds['split']} split)"), html.img(predictions_figure(preds), title)]
    seconds = [r.get("seconds") for r in rows if isinstance(r.get("seconds"), (int, float))]
    timing = [["training seconds", summary.get("train_seconds")], ["epochs", len(rows)],
              ["seconds per epoch (median)", float(np.median(seconds)) if seconds else None],
              ["parameters", summary.get("parameters")], ["device", summary.get("device")]]
    blocks += [html.heading("Timings and versions"), html.table(["", "value"], timing),
               html.table(["package", "version"], sorted(summary.get("versions", {}).items()))]
    blocks += [html.heading("Resolved recipe (config.toml)"), html.preformatted(recipe)]
    return html.write(run_dir / "report.html", f"descend run: {summary.get('name') or run_dir.name}", blocks)
