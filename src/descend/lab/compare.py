"""Compare training variants fairly: every variant × every seed, then interval estimates, not single numbers.

``descend compare RECIPE --vary optimizer.name=sgd,adam --seeds 5 --jobs 2`` trains each combination of the
``--vary`` values (the first value of each is the baseline) with seeds 0..S−1, in ``--jobs`` processes that each
load the data once. The data split stays the recipe's (its ``seed``); the seed of each run changes the
initialisation, the batch order, dropout and augmentation. A variant that crashes or diverges is reported, and
the others go on. Statistics follow Agarwal et al. (2021, rliable): mean ± std, a 95% percentile-bootstrap
interval over seeds, the probability that a run of the variant beats a run of the baseline (with its bootstrap
interval), and ranks.
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
import os
import time
import traceback
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np

from descend import atomic, tracking
from descend import config as cfg
from descend.errors import DivergenceError, UserError
from descend.lab.base import jsonable
from descend.lab.stats import bootstrap_ci, probability_interval, probability_of_improvement, ranks
from descend.report.compare import write_compare_report
from descend.runs import experiment, workflow
from descend.train import threads as thread_policy

MAX_VARIANTS = 1000
_DATA: dict[str, object] = {}  # per process: data section -> DataBundle, so each process loads a data set once


def split_values(text: str) -> list[str]:
    """``a,b,[1,2]`` -> ``["a", "b", "[1,2]"]``: commas inside brackets or quotes do not split."""
    out, depth, quote, current = [], 0, None, ""
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        current += ch
    out.append(current.strip())
    return [v for v in out if v]


def variants(vary: list[str]) -> list[list[str]]:
    """Every combination of the ``--vary FIELD=V1,V2`` values, as lists of ``FIELD=V`` overrides; the first
    combination (the first value of each) is the baseline."""
    axes = []
    for item in vary:
        field, sep, values = item.partition("=")
        if not sep or not field.strip() or not split_values(values):
            raise UserError(f"--vary expects section.field=value1,value2,..., got {item!r}")
        axes.append([f"{field.strip()}={v}" for v in split_values(values)])
    count = math.prod(len(axis) for axis in axes)
    if count > MAX_VARIANTS:  # each is checked, then trained --seeds times: refused before the product is built
        raise UserError(f"--vary makes {count:,} variants (every combination of the values); a comparison takes at "
                        f"most {MAX_VARIANTS:,}: vary fewer fields or values at once, or search with descend tune")
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


def _data_for(config):
    key = json.dumps([config.data.model_dump(), config.seed], sort_keys=True, default=str)
    if key not in _DATA:
        _DATA[key] = experiment.load_data(config)
    return _DATA[key]


def run_one(task: tuple) -> dict:
    """Train one (variant, seed) on one thread (runs side by side compete for no core; torch's setting is put
    back afterwards); never raises: crashes and divergence come back as a status."""
    with thread_policy.fixed(1):
        return _run_one(task)


def _run_one(task: tuple) -> dict:
    recipe, overrides, index, seed = task
    started = time.perf_counter()
    out = {"variant": index, "seed": seed, "history": [], "final": {}, "status": "finished", "error": None}
    try:
        base = cfg.load(recipe, overrides)                       # data split: the recipe's own seed
        raw = base.model_dump()
        raw["seed"] = seed
        config = cfg.validate(raw, str(recipe))
        exp = experiment.build(config, _data_for(base))
        try:
            with tracking.tagged(variant=index, seed=seed, overrides=" ".join(overrides)):  # [tracking] mlflow
                result = exp.fit()
            out["final"], out["status"], out["train_seconds"] = dict(result.final), result.status, result.seconds
            if exp.data.test is not None and len(exp.data.test):
                out["final"].update(exp.evaluate("test"))
        except DivergenceError as e:
            out["status"], out["error"] = "diverged", str(e)
        out["history"] = [{k: v for k, v in row.items() if isinstance(v, (int, float))} for row in
                          exp.trainer.history]
    except Exception as e:  # noqa: BLE001 - a crashing variant is a result to report, not a reason to stop
        out["status"], out["error"] = "crashed", f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=3)
    out["seconds"] = time.perf_counter() - started
    return out


def choose_metric(runs: list[dict]) -> tuple[str, bool]:
    """The value compared: validation accuracy, else validation loss, else the training ones."""
    keys = set().union(*(r["final"] for r in runs)) if runs else set()
    for key, higher in (("val_accuracy", True), ("val_loss", False), ("train_accuracy", True),
                        ("train_loss", False)):
        if key in keys:
            return key, higher
    return "val_loss", False


def summarize(names: list[str], runs: list[dict], seeds: int) -> dict:
    metric, higher = choose_metric([r for r in runs if r["status"] != "crashed"])
    best_of = max if higher else min
    rows = []
    for i, name in enumerate(names):
        mine = [r for r in runs if r["variant"] == i]
        ok = [r for r in mine if r["status"] in ("finished", "stopped_early") and metric in r["final"]]
        final = np.array([r["final"][metric] for r in ok], dtype=float)
        best = np.array([best_of(h[metric] for h in r["history"] if metric in h) for r in ok
                         if any(metric in h for h in r["history"])], dtype=float)
        rows.append({"name": name, "runs": len(mine), "ok": len(ok),
                     "failed": [{"seed": r["seed"], "status": r["status"], "error": r["error"]} for r in mine
                                if r not in ok],
                     "final": _stats(final), "best": _stats(best), "final_per_seed": final.tolist(),
                     "seconds": float(np.mean([r.get("train_seconds", r["seconds"]) for r in mine])) if mine
                     else math.nan})
    baseline = np.array(rows[0]["final_per_seed"]) if rows else np.array([])
    for row in rows:
        mine = row["final_per_seed"]
        row["p_beats_baseline"] = probability_of_improvement(mine, baseline, higher_is_better=higher)
        row["p_beats_baseline_ci"] = list(probability_interval(mine, baseline, higher_is_better=higher))
    order = ranks({r["name"]: r["final"]["mean"] for r in rows}, higher_is_better=higher)
    for row in rows:
        row["rank"] = order[row["name"]]
        f = row["final"]
        row["summary"] = (f"{metric} {f['mean']:.4g} ± {f['std']:.2g} (95% CI {f['ci'][0]:.4g}..{f['ci'][1]:.4g}), "
                          f"P(beats baseline) {row['p_beats_baseline']:.2f}, {row['ok']}/{row['runs']} ok, "
                          f"{row['seconds']:.1f}s" if row["ok"] else
                          f"all {row['runs']} runs failed: {row['failed'][0]['status']}")
    return {"metric": metric, "higher_is_better": higher, "seeds": seeds, "baseline": names[0] if names else None,
            "variants": rows}


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"mean": math.nan, "std": math.nan, "ci": [math.nan, math.nan], "n": 0}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "ci": list(bootstrap_ci(values)), "n": int(values.size)}


def compare_recipe(recipe: str | Path | dict | cfg.Config, vary: list[str], overrides: list[str] = (), *,
                   seeds: int = 3, jobs: int = 1, out: str | Path | None = None, model=None, data=None) -> dict:
    """Run the comparison and write ``compare.json`` and ``compare.html`` into ``out``; returns the summary
    (with ``report``: the HTML path). ``recipe`` may be a dict or a Config, and ``model`` and ``data`` replace its
    sections (:func:`descend.runs.workflow.recipe`): the recipe compared is then written to ``out/recipe.toml``."""
    if model is not None or data is not None or not isinstance(recipe, (str, Path)):
        given = workflow.recipe(recipe, model=model, data=data, overrides=overrides)
        out = Path(out) if out is not None else Path("runs") / f"compare-{given.name}-{datetime.now():%Y%m%d-%H%M%S}"
        recipe, overrides = out / "recipe.toml", []
        atomic.write_text(recipe, cfg.dump(given), what="recipe")

    if seeds < 1 or jobs < 1:
        raise UserError(f"--seeds and --jobs must be at least 1, got {seeds} and {jobs}")
    if jobs > (os.cpu_count() or 1):  # each worker is a process with its own torch: more than CPUs only costs memory
        raise UserError(f"--jobs must be at most the {os.cpu_count() or 1} CPUs of this machine, got {jobs}")
    if seeds == 1:
        warnings.warn("--seeds 1 measures no spread: each interval is one point and P(beats baseline) can only be "
                      "0, 0.5 or 1, so a difference may be the seed's; use --seeds 3 or more", UserWarning,
                      stacklevel=2)
    combos = variants(vary)
    names = [", ".join(c) or "recipe as given" for c in combos]
    for combo in combos:                      # every variant's recipe is checked before anything trains
        base = cfg.load(recipe, [*overrides, *combo])
        experiment.check_model(base)          # and a model factory's arguments, against its signature
    stamp = f"compare-{base.name or 'recipe'}-{datetime.now():%Y%m%d-%H%M%S}"
    out = Path(out) if out is not None else Path("runs") / stamp
    # made as they are needed: memory grows with the runs done, not with the number asked for
    tasks = ((str(recipe), [*overrides, *combo], i, seed) for i, combo in enumerate(combos) for seed in range(seeds))
    started = time.perf_counter()
    with tracking.group(cfg.load(recipe, list(overrides)), out.name, "compare", vary=" ".join(vary)):
        if jobs == 1:  # with [tracking] mlflow: one MLflow run per variant and seed, under the comparison's
            runs = [run_one(t) for t in tasks]
        else:
            with multiprocessing.get_context("spawn").Pool(min(jobs, len(combos) * seeds)) as pool:
                runs = list(pool.imap(run_one, tasks, chunksize=1))
    summary = summarize(names, runs, seeds)
    summary.update({"recipe": str(recipe), "vary": list(vary), "overrides": list(overrides), "jobs": jobs,
                    "wall_seconds": time.perf_counter() - started,
                    "runs": [{k: v for k, v in r.items() if k != "traceback"} for r in runs]})
    atomic.write_text(out / "compare.json", json.dumps(jsonable(summary), indent=2) + "\n", what="comparison")
    summary["report"] = str(write_compare_report(out, summary))
    return summary

