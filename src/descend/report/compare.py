"""``compare.html``: the comparison table (mean ± std, bootstrap interval, P(beats baseline), rank, seconds),
overlaid learning curves with ±1 std bands, the final metric per seed, and the runs that failed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from descend.report import html


def curve_bands(runs: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std of ``key`` over the runs, up to the shortest run that logged it."""
    series = [[h[key] for h in r["history"] if key in h] for r in runs]
    series = [s for s in series if s]
    if not series:
        return np.array([]), np.array([]), np.array([])
    length = min(len(s) for s in series)
    values = np.array([s[:length] for s in series], dtype=float)
    return np.arange(1, length + 1), values.mean(axis=0), values.std(axis=0)


def curves_figure(summary: dict):
    metric = summary["metric"]
    keys = ["val_loss" if metric.startswith("val") else "train_loss"]
    if not metric.endswith("loss"):
        keys.append(metric)
    fig, axes = html.figure(5.4 * len(keys), 3.6, ncols=len(keys))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for i, row in enumerate(summary["variants"]):
            runs = [r for r in summary["runs"] if r["variant"] == i and r["status"] in ("finished", "stopped_early")]
            epochs, mean, std = curve_bands(runs, key)
            if len(epochs):
                ax.plot(epochs, mean, color=f"C{i % 10}", label=row["name"])
                ax.fill_between(epochs, mean - std, mean + std, color=f"C{i % 10}", alpha=0.2)
        ax.set(ylabel=key)
        html.epoch_axis(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def seeds_figure(summary: dict):
    rows = summary["variants"]
    fig, ax = html.figure(max(4.0, 1.3 * len(rows) + 2), 3.6)
    for i, row in enumerate(rows):
        values = row["final_per_seed"]
        if values:
            ax.plot(np.full(len(values), i) + np.linspace(-0.1, 0.1, len(values)), values, "o", color=f"C{i % 10}",
                    alpha=0.7)
            mean, (low, high) = row["final"]["mean"], row["final"]["ci"]
            ax.errorbar([i + 0.25], [mean], yerr=[[mean - low], [high - mean]], fmt="ks", capsize=4, ms=4)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], fontsize=7, rotation=15)
    ax.set(ylabel=f"final {summary['metric']}", xlim=(-0.6, len(rows) - 0.4))
    ax.grid(alpha=0.3, axis="y")
    return fig


def _probability(row: dict) -> str:
    low, high = row.get("p_beats_baseline_ci", (np.nan, np.nan))
    return f"{html.fmt(row['p_beats_baseline'])} ({html.fmt(low)} .. {html.fmt(high)})"


def write_compare_report(out: str | Path, summary: dict) -> Path:
    metric, rows = summary["metric"], summary["variants"]
    direction = "higher" if summary["higher_is_better"] else "lower"
    table = [[r["rank"], r["name"], f"{r['ok']}/{r['runs']}", r["final"]["mean"], r["final"]["std"],
              f"{html.fmt(r['final']['ci'][0])} .. {html.fmt(r['final']['ci'][1])}", r["best"]["mean"],
              _probability(r), r["seconds"]] for r in sorted(rows, key=lambda r: r["rank"])]
    blocks = [
        html.paragraph(f"Recipe {summary['recipe']}, {summary['seeds']} seeds per variant; {metric} ({direction} is "
                       f"better); baseline: {summary['baseline']}. Intervals are 95% percentile-bootstrap intervals "
                       "over seeds; P(beats baseline) is the probability that a run of the variant scores better "
                       "than a run of the baseline over all pairs of seeds (ties count half; the baseline against "
                       "itself is 0.5), with its 95% bootstrap interval, as in Agarwal et al. 2021 (rliable)."),
        html.table(["rank", "variant", "ok runs", f"final {metric} mean", "std", "95% CI", f"best {metric} mean",
                    "P(beats baseline)", "training seconds per run"], table),
        html.img(curves_figure(summary), "learning curves: mean over seeds, band ±1 std"),
        html.img(seeds_figure(summary), f"final {metric} per seed (dots), mean and 95% CI (black)"),
    ]
    failed = [[r["name"], f["seed"], f["status"], f["error"] or ""] for r in rows for f in r["failed"]]
    if failed:
        blocks += [html.heading("Runs that failed"), html.table(["variant", "seed", "status", "error"], failed)]
    blocks.append(html.paragraph(f"Wall time {summary['wall_seconds']:.1f} s with {summary['jobs']} process(es).",
                                 "note"))
    return html.write(Path(out) / "compare.html", f"descend compare: {Path(summary['recipe']).name}", blocks)
