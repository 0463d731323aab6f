"""Lab ``optimizers``: which optimizer should I use? A small, fair bake-off in the way of AlgoPerf (Dahl et al.
2023, "Benchmarking Neural Network Training Algorithms").

Every optimizer gets the same budget: descend's own search (:func:`descend.tune.search`, quasi-random Halton
points, the same number of trials for each) over its learning rate on a log scale three decades wide, centred on
its authors' default (for the learning-rate-free ones, Prodigy and D-Adaptation, over the multiplier of their
estimated step size), each trial trained with seed 0 and judged by the final validation accuracy. The best
setting then trains with fresh seeds (1, 2, 3, ...). Other options stay at their defaults, and no run has a
learning-rate schedule (the schedule-free optimizers refuse one; the others all run at a constant rate), so
what is compared is the optimizers as one line of a recipe, tuned alike.

Reported per optimizer and data set: the final validation accuracy (mean and 95% bootstrap interval over seeds),
the steps and seconds until the validation accuracy first reaches a target (AlgoPerf's time-to-result; the target
is 97% of the best mean final accuracy of the lab), and the probability that a run beats AdamW's
(:func:`descend.lab.stats.probability_of_improvement`, as ``descend compare``). Seconds are wall time on the
machine the lab ran on.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np

from descend import config as cfg
from descend import data, tune
from descend.lab.base import LabResult
from descend.lab.claims import Estimate, highest
from descend.lab.stats import bootstrap_ci, probability_of_improvement
from descend.report import html
from descend.runs import experiment

#: optimizer -> the centre of its searched learning-rate range (its authors' default, or a usual value)
CENTRES = {
    "adamw": 1e-3,
    "momentum": 3e-2,
    "lion": 1e-4,
    "muon": 1e-2,
    "adafactor": 1e-2,
    "schedule_free_sgd": 1.0,
    "schedule_free_adamw": 2.5e-3,
    "prodigy": 1.0,
    "dadapt_sgd": 1.0,
    "sam": 3e-2,
    "lookahead": 1e-3,
}
QUICK = ("adamw", "lion", "schedule_free_adamw", "prodigy")
TARGET_FRACTION = 0.97


def _recipes(quick: bool, folder: Path) -> dict[str, dict]:
    """The two problems: MNIST-1D and a Fashion-MNIST subset (flattened), each with a 2-layer MLP."""
    fashion = data.load("fashion_mnist", val_fraction=0.0, scale="none")
    n_train, n_test = (1000, 200) if quick else (4000, 1000)
    path = folder / "fashion_subset.npz"
    np.savez(
        path,
        x=fashion.train.x[:n_train].reshape(n_train, -1).numpy(),
        y=fashion.train.y[:n_train].numpy(),
        x_test=fashion.test.x[:n_test].reshape(n_test, -1).numpy(),
        y_test=fashion.test.y[:n_test].numpy(),
    )
    train = {"epochs": 4 if quick else 10, "batch_size": 128, "device": "cpu", "threads": 1}
    return {
        "mnist1d": {
            "name": "mnist1d",
            "seed": 0,
            "train": train,
            "model": {"name": "mlp", "hidden": [128, 128]},
            "data": {
                "name": "mnist1d",
                "num_samples": 2000 if quick else 4000,
                "val_fraction": 0.2,
                "scale": "standardize",
            },
        },
        "fashion_mnist_subset": {
            "name": "fashion_subset",
            "seed": 0,
            "train": train,
            "model": {"name": "mlp", "hidden": [128, 128]},
            "data": {"name": str(path), "val_fraction": 0.2, "scale": "standardize"},
        },
    }


def _tuned_lr(raw: dict, name: str, trials: int, out: Path) -> tuple[float, int]:
    """The best learning rate of ``trials`` quasi-random trials, and how many trials diverged."""
    centre = CENTRES[name]
    space = tune.space.parse({"optimizer": {"lr": {"float": [centre / 10**1.5, centre * 10**1.5], "log": True}}})
    recipe = cfg.validate({**raw, "optimizer": {"name": name}}, source="lab recipe")
    quiet = logging.getLogger("optuna")  # a diverged trial is an outcome here, not a traceback to print
    before, quiet.disabled = quiet.disabled, True
    try:
        result = tune.search(
            recipe,
            space,
            sampler="qmc",
            trials=trials,
            seed=0,
            out=out / name,
            keep_runs=False,
            echo=lambda *args, **kwargs: None,
        )
    finally:
        quiet.disabled = before
    failed = sum(t["state"] != "complete" for t in result["trials"])
    best = result["best"]
    return (float(best["params"]["optimizer.lr"]) if best is not None else centre), failed


def _train(raw: dict, name: str, lr: float, seed: int) -> list[dict]:
    recipe = cfg.validate({**raw, "seed": seed, "optimizer": {"name": name, "lr": lr}}, source="lab recipe")
    return list(experiment.build(recipe).fit().history)


def _to_target(history: list[dict], target: float) -> tuple[float, float]:
    """(steps, seconds) until the validation accuracy first reaches ``target`` (NaN when it never does)."""
    seconds = 0.0
    for row in history:
        seconds += row["seconds"]
        if row["val_accuracy"] >= target:
            return float(row["step"]), seconds
    return math.nan, math.nan


def optimizers_lab(quick: bool = False) -> LabResult:
    names = QUICK if quick else tuple(CENTRES)
    trials, seeds = (2, 2) if quick else (4, 3)
    runs: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for problem, raw in _recipes(quick, folder).items():
            runs[problem] = {}
            for name in names:
                lr, failed = _tuned_lr(raw, name, trials, folder / problem)
                histories = [_train(raw, name, lr, seed) for seed in range(1, seeds + 1)]
                runs[problem][name] = {"lr": lr, "diverged_trials": failed, "histories": histories}
    measured, tables, findings = {"trials": trials, "seeds": seeds}, [], []
    for problem, by_name in runs.items():
        finals = {n: [h[-1]["val_accuracy"] for h in r["histories"]] for n, r in by_name.items()}
        target = TARGET_FRACTION * max(np.mean(v) for v in finals.values())
        rows, summary = [], {}
        for name, r in by_name.items():
            reached = [_to_target(h, target) for h in r["histories"]]
            steps, secs = np.array([s for s, _ in reached]), np.array([t for _, t in reached])
            low, high = bootstrap_ci(finals[name])
            p = probability_of_improvement(finals[name], finals["adamw"], higher_is_better=True)
            hit = ~np.isnan(steps)
            summary[name] = {
                "lr": r["lr"],
                "diverged_trials": r["diverged_trials"],
                "final_val_accuracy": finals[name],
                "mean": float(np.mean(finals[name])),
                "ci95": [low, high],
                "p_beats_adamw": p,
                "reached": int(hit.sum()),
                "steps_to_target": float(np.median(steps[hit])) if hit.any() else None,
                "seconds_to_target": float(np.median(secs[hit])) if hit.any() else None,
            }
            s = summary[name]
            rows.append(
                [
                    name,
                    f"{r['lr']:.3g}",
                    r["diverged_trials"],
                    f"{100 * s['mean']:.2f} [{100 * low:.2f}, {100 * high:.2f}]",
                    f"{s['reached']}/{len(hit)}",
                    s["steps_to_target"] or "–",
                    f"{s['seconds_to_target']:.2f}" if s["seconds_to_target"] else "–",
                    f"{p:.2f}",
                ]
            )
        measured[problem] = {"target": target, "optimizers": summary}
        tables.append(
            (
                f"{problem}: target validation accuracy {100 * target:.2f}%",
                [
                    "optimizer",
                    "tuned lr",
                    "diverged trials",
                    "final val acc % (95% CI)",
                    "reached target",
                    "steps to target",
                    "seconds to target",
                    "P(beats AdamW)",
                ],
                rows,
            )
        )
        findings.append(_finding(problem, summary, target))
    fig, axes = html.figure(11.0, 3.5, ncols=len(runs))
    for ax, (problem, by_name) in zip(np.atleast_1d(axes), runs.items(), strict=True):
        for name, r in by_name.items():
            curves = np.array([[row["val_accuracy"] for row in h] for h in r["histories"]])
            ax.plot(range(1, curves.shape[1] + 1), curves.mean(0), "o-", ms=2, label=name)
        ax.axhline(measured[problem]["target"], color="k", lw=0.8, ls="--")
        ax.set(title=problem, ylabel="validation accuracy (mean over seeds)")
        html.epoch_axis(ax)
    np.atleast_1d(axes)[0].legend(fontsize=6)
    return LabResult(
        "optimizers",
        "optimizers, each tuned alike",
        "Which optimizer should I use? As AlgoPerf (Dahl et al. 2023) answers it: each optimizer gets the same "
        f"search budget ({trials} quasi-random trials of descend's search over its learning rate, three decades "
        "around its default), then its best setting trains with fresh seeds; reported are the final validation "
        "accuracy with a 95% bootstrap interval, the steps and seconds to a target accuracy (97% of the best mean), "
        "and the probability that a run beats AdamW's (Agarwal et al. 2021). A 2-layer MLP (128, 128) on MNIST-1D "
        "and on a Fashion-MNIST subset, batch 128, constant learning rate, other options at their defaults.",
        measured,
        [("Validation accuracy per epoch, mean over seeds (dashed: the target)", fig)],
        tables,
        findings,
    )


def _finding(problem: str, summary: dict, target: float) -> str:
    """The problem's sentence, only as strong as its intervals: the optimizer with the highest mean final accuracy
    is named the best only when its 95% interval lies above every other's; otherwise the optimizers it cannot be
    told apart from are named with it."""
    points = {n: Estimate(o["mean"], *o["ci95"]) for n, o in summary.items()}
    best, tied = highest(points, list(points))
    mean = f"{100 * summary[best]['mean']:.2f}%"
    if tied:
        head = (f"{problem}: highest mean final validation accuracy {best} ({mean}), not distinguished at 95% from "
                f"{', '.join(tied)}")
    else:
        head = f"{problem}: best final validation accuracy {best} ({mean}), its 95% interval above every other's"
    reached = {n: o["steps_to_target"] for n, o in summary.items() if o["steps_to_target"]}
    fewest = [n for n, steps in reached.items() if steps == min(reached.values())] if reached else []
    return (f"{head}; AdamW {100 * summary['adamw']['mean']:.2f}%; fewest steps (median over seeds) to "
            f"{100 * target:.2f}%: {', '.join(fewest) or 'none reached it'}.")

