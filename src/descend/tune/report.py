"""What a search leaves behind: ``tune.json``, ``best.toml``, ``tune.html`` and a leaderboard in the terminal.

``tune.html`` is self-contained (plots as inline PNG): the best value so far against the trial number, each
parameter against the metric, and the parameters' importances (fANOVA, Hutter et al. 2014, as Optuna computes it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import warnings
from pathlib import Path

import optuna

from .. import config as cfg
from ..atomic import write_json, write_text
from .space import Space
from .storage import safe
from .study import Plan


def line(trial: optuna.trial.FrozenTrial, space: Space, plan: Plan) -> str:
    """One finished trial, for the terminal."""
    value = f"{trial.value:.4f}" if trial.value is not None else "-"
    shown = ", ".join(f"{path}={_short(v)}" for path, v in space.values(trial.params).items())
    epochs, seconds = trial.user_attrs.get("epochs", "-"), trial.user_attrs.get("seconds", 0.0)
    return (f"trial {trial.number:>3} {trial.state.name.lower():<8} {plan.metric} {value}  {epochs} epochs "
            f"{seconds:.1f}s  {shown}")


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def rows(study: optuna.Study, space: Space) -> list[dict]:
    """Every trial run or running (queued ones, and surplus ones made by a race between workers, left out)."""
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state == optuna.trial.TrialState.WAITING:
            continue
        row = {"number": t.number, "state": t.state.name.lower(), "params": space.values(t.params),
               "value": t.value, "epochs": t.user_attrs.get("epochs"), "seconds": t.user_attrs.get("seconds")}
        for key in ("fold_scores", "error"):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        retry_of = t.system_attrs.get("failed_trial", t.user_attrs.get("retry_of"))
        if retry_of is not None:
            row["retry_of"] = retry_of
        out.append(row)
    return out


def best_row(table: list[dict], plan: Plan) -> dict | None:
    complete = [r for r in table if r["state"] == "complete" and r["value"] is not None and math.isfinite(r["value"])]
    if not complete:
        return None
    sign = -1 if plan.direction == "maximize" else 1
    return min(complete, key=lambda r: (sign * r["value"], r["number"]))


def write(study: optuna.Study, space: Space, raw: dict, plan: Plan, out: Path, *, storage: str, refit=None,
          echo=print) -> dict:
    """Write ``tune.json``, ``best.toml`` and ``tune.html`` into ``out``; print the leaderboard; refit if asked."""
    table = rows(study, space)
    best = best_row(table, plan)
    queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    result = {"study": study.study_name, "storage": safe(storage), "plan": {k: v for k, v in plan.__dict__.items()
                                                                            if k != "space"},
              "stopped": study.user_attrs.get("stopped") or None, "queued": queued, "trials": table, "best": best}
    if best is not None:
        best_raw = space.apply(raw, {p: v for p, v in _params(study, best["number"]).items()})
        best_raw["name"] = f"{raw.get('name') or 'recipe'}-best"
        text = (f"# The best recipe of study {study.study_name!r}: trial {best['number']}, {plan.metric} = "
                f"{best['value']:.6g} (descend tune)\n" + cfg.dump(cfg.validate(best_raw, source="best recipe")))
        write_text(out / "best.toml", text, what="best recipe")
        result["best_recipe"] = str(out / "best.toml")
        if refit is not None:
            result["refit"] = refit(best_raw, best["epochs"] or plan.epochs, out / "refit")
    write_json(out / "tune.json", result, what="search results")
    write_text(out / "tune.html", page(study, table, best, plan), what="search report")
    echo(leaderboard(table, plan) + (f"\n{queued} queued trials not run yet" if queued else ""))
    if result["stopped"]:
        echo(f"stopped: {result['stopped']}")
    if best is not None:
        echo(f"best: trial {best['number']}  {plan.metric} {best['value']:.4f}  ->  {out / 'best.toml'}")
    if "refit" in result:
        shown = "  ".join(f"{k} {v:.4g}" for k, v in result["refit"].items() if k.startswith("test_"))
        echo(f"refit on train+val for {result['refit']['epochs']} epochs: {shown}")
    return result


def _params(study: optuna.Study, number: int) -> dict:
    return next(t.params for t in study.get_trials(deepcopy=False) if t.number == number)


def leaderboard(table: list[dict], plan: Plan, top: int = 10) -> str:
    counts = {}
    for r in table:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    done = [r for r in table if r["state"] == "complete" and r["value"] is not None]
    done.sort(key=lambda r: (-r["value"] if plan.direction == "maximize" else r["value"], r["number"]))
    lines = [f"{len(table)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
             f"{'rank':>4} {'trial':>5} {plan.metric:>14} {'epochs':>6} {'seconds':>8}  params"]
    for rank, r in enumerate(done[:top], 1):
        shown = ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
        lines.append(f"{rank:>4} {r['number']:>5} {r['value']:>14.4f} {r['epochs'] or '-':>6} "
                     f"{r['seconds'] or 0:>8.1f}  {shown}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- tune.html
def page(study: optuna.Study, table: list[dict], best: dict | None, plan: Plan) -> str:
    head = (f"<h1>Search: {html.escape(study.study_name)}</h1><p>{plan.sampler} sampler, {plan.pruner} pruner, "
            f"seed {plan.seed}, metric {html.escape(plan.metric)} ({plan.direction})"
            f"{f', {plan.folds}-fold cross-validation' if plan.folds else ''}.</p>")
    if best is not None:
        head += f"<p>Best: trial {best['number']}, {best['value']:.6g}: <code>{html.escape(json.dumps(best['params']))}"
        head += "</code></p>"
    png = _figure(table, plan, _importances(study))
    body = ("<p>The best value so far; each parameter against the metric; the parameters' importance.</p>"
            f"<img src='data:image/png;base64,{png}'>")
    rows_html = "".join(f"<tr><td>{r['number']}</td><td>{r['state']}</td><td>{_cell(r['value'])}</td>"
                        f"<td>{r['epochs'] or ''}</td><td>{html.escape(json.dumps(r['params']))}</td></tr>"
                        for r in table)
    trials = "<h2>Trials</h2><table><tr><th>trial</th><th>state</th><th>value</th><th>epochs</th><th>params</th></tr>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
            f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{padding:2px 8px;"
            f"text-align:left}}</style></head><body>{head}{body}{trials}{rows_html}</table></body></html>")


def _cell(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _paths(table: list[dict]) -> list[str]:
    return list(dict.fromkeys(p for r in table for p in r["params"]))


def _importances(study: optuna.Study) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials": the importances are then equal, and shown so
            return optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):  # no complete trial, or no parameter shared by all of them
        return {}


def _figure(table: list[dict], plan: Plan, importances: dict[str, float]) -> str:
    """All panels in one figure (one PNG to encode): history, one scatter per parameter, importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = _paths(table)
    panels = 1 + len(paths) + bool(importances)
    columns = min(panels, 3)
    rows_ = -(-panels // columns)
    fig, axes = plt.subplots(rows_, columns, figsize=(4.2 * columns, 3.2 * rows_), squeeze=False)
    axes = list(axes.flat)
    _history(axes[0], table, plan)
    for ax, path in zip(axes[1:], paths):
        _scatter(ax, table, path, plan)
    if importances:
        _bars(axes[len(paths) + 1], importances)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _complete(table: list[dict]) -> list[dict]:
    return [r for r in table if r["state"] == "complete" and r["value"] is not None]


def _history(ax, table: list[dict], plan: Plan) -> None:
    done = sorted((r["number"], r["value"]) for r in _complete(table))
    pick = max if plan.direction == "maximize" else min
    best, curve = None, []
    for _, value in done:
        best = value if best is None else pick(best, value)
        curve.append(best)
    ax.plot([n for n, _ in done], [v for _, v in done], "o", alpha=0.4, label="trial")
    ax.step([n for n, _ in done], curve, where="post", label="best so far")
    ax.set(xlabel="trial", ylabel=plan.metric, title="best value so far")
    ax.legend(fontsize=8)


def _scatter(ax, table: list[dict], path: str, plan: Plan) -> None:
    points = [(r["params"][path], r["value"]) for r in _complete(table) if path in r["params"]]
    xs = [p for p, _ in points]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    ax.plot(xs if numeric else [json.dumps(x) for x in xs], [v for _, v in points], "o", alpha=0.6)
    if numeric and xs and min(xs) > 0 and max(xs) / min(xs) > 50:
        ax.set_xscale("log")
    ax.set(xlabel=path, ylabel=plan.metric, title=path)


def _bars(ax, importances: dict[str, float]) -> None:
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance", title="importance (fANOVA)")
