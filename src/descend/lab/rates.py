"""Labs ``learning-rates`` (too small, good, too large, divergent), ``schedules`` and ``search`` (grid vs random)."""

from __future__ import annotations

import itertools
import math

import numpy as np

from descend import data, models, optim, schedules
from descend.errors import DivergenceError
from descend.lab.base import LabResult
from descend.lab.surfaces import SURFACES
from descend.report import html
from descend.train import Trainer

RATES = {"too small": 1e-4, "good": 0.5, "too large": 2.5, "divergent": 10.0}


def learning_rates_lab(quick: bool = False) -> LabResult:
    bundle = data.load("digits", val_fraction=0.2, seed=0)
    epochs = 3 if quick else 20
    curves, rows = {}, []
    for label, lr in RATES.items():
        trainer = Trainer(models.mlp([64]), loss="cross_entropy", optimizer=optim.create("gd", lr=lr),
                          device="cpu", seed=0)
        try:
            trainer.fit(bundle.train, bundle.val, epochs=epochs, batch_size=64)
            status = "finished"
        except DivergenceError:
            status = f"diverged at step {trainer.global_step}"
        history = trainer.history
        curves[label] = (history["train_loss"], history["val_accuracy"]) if len(history) else ([], [])
        last = history[-1] if len(history) else {}
        rows.append([label, lr, last.get("train_loss", math.nan), last.get("val_accuracy", math.nan), status])
    measured = {"epochs": epochs, "runs": {r[0]: {"lr": r[1], "final_train_loss": r[2], "final_val_accuracy": r[3],
                                                  "status": r[4]} for r in rows}}
    fig, (a1, a2) = html.figure(9.5, 3.4, ncols=2)
    for label, (loss, accuracy) in curves.items():
        a1.semilogy(range(1, len(loss) + 1), loss, "o-", ms=3, label=f"{label} (lr {RATES[label]:g})")
        a2.plot(range(1, len(accuracy) + 1), accuracy, "o-", ms=3, label=label)
    a1.set(ylabel="training loss", title="training loss")
    a2.set(ylabel="validation accuracy", title="validation accuracy")
    html.epoch_axis(a1, a2)
    a1.legend(fontsize=7)
    runs = measured["runs"]
    return LabResult(
        "learning-rates", "learning rates: too small, good, too large, divergent",
        "The learning rate is the hyper-parameter to tune first (Bengio 2012, 'Practical recommendations for "
        "gradient-based training of deep architectures'): too small and the loss barely moves, too large and it "
        "stalls high or oscillates, larger still and it diverges to infinity. Same network (one hidden layer of "
        "64 ReLU units), same data (scikit-learn digits), same initialisation and batches, plain SGD.",
        measured, [("Loss and validation accuracy per epoch for each learning rate", fig)],
        [("Final values", ["regime", "lr", "train loss", "val accuracy", "status"], rows)],
        [f"After {epochs} epochs, final training loss / validation accuracy: "
         + "; ".join(f"{k} (lr {v['lr']:g}) {v['final_train_loss']:.3g} / {v['final_val_accuracy']:.3f}"
                     + ("" if v["status"] == "finished" else f", {v['status']}") for k, v in runs.items()) + "."])


SCHEDULES = {  # options chosen so each shape shows within a 100-epoch run
    "constant": {}, "step": {"step_size": 30, "gamma": 0.3}, "multistep": {"milestones": [50, 75]},
    "exponential": {"gamma": 0.97}, "cosine": {}, "linear": {}, "polynomial": {"power": 2.0},
    "inverse_time": {"decay_rate": 0.1}, "inverse_sqrt": {}, "cosine_restarts": {"period": 10},
    "cyclic": {"half_period": 10}, "one_cycle": {}, "plateau": {"patience": 5, "factor": 0.5},
}


def schedule_curves(epochs: int = 100, steps_per_epoch: int = 10) -> dict[str, list[float]]:
    """Each schedule's rate (base rate 1) at every step of a run; plateau watches a validation loss that
    improves for 30 epochs and then stalls."""
    total, curves = epochs * steps_per_epoch, {}
    for name, options in {**SCHEDULES, "warmup + cosine": {}}.items():
        s = schedules.warmup(schedules.cosine(), epochs=5) if name == "warmup + cosine" else schedules.create(
            name, **options)
        s.bind(steps_per_epoch, total)
        rates = []
        for step in range(total):
            rates.append(s.lr(1.0, step))
            if (step + 1) % steps_per_epoch == 0:
                epoch = (step + 1) // steps_per_epoch
                s.observe({"val_loss": 1.0 / min(epoch, 30)})
        curves[name] = rates
    return curves


def schedules_lab(quick: bool = False) -> LabResult:
    epochs, per = 100, 10 if quick else 20
    curves = schedule_curves(epochs, per)
    names = list(curves)
    cols = 4
    fig, axes = html.figure(11, 2.0 * math.ceil(len(names) / cols), ncols=cols, nrows=math.ceil(len(names) / cols))
    epoch_axis = np.arange(epochs * per) / per
    for ax, name in zip(axes.flat, names):
        ax.plot(epoch_axis, curves[name], lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    marks = [0.25, 0.5, 0.75, 1.0]
    at = {n: [curves[n][min(int(m * epochs * per), epochs * per - 1)] for m in marks] for n in names}
    return LabResult(
        "schedules", "learning-rate schedules",
        "A schedule changes the learning rate during training: step and exponential decay, cosine annealing "
        "(Loshchilov & Hutter 2017, with warm restarts: SGDR), inverse-time and inverse-square-root decay, "
        "cyclical rates (Smith 2017), 1cycle (Smith & Topin 2019), warmup (Goyal et al. 2017) and "
        "reduce-on-plateau. Every schedule descend has, over one 100-epoch run at base rate 1.",
        {"epochs": epochs, "steps_per_epoch": per, "rate_at_fraction": {"fractions": marks, **at}},
        [("Learning rate (times the base rate) against epoch", fig)],
        [("Rate at 25 / 50 / 75 / 100 % of the run", ["schedule", "25%", "50%", "75%", "100%"],
          [[n, *at[n]] for n in names])],
        ["Plateau halves the rate every 6 epochs once the validation loss stops improving at epoch 30; "
         f"cosine ends at {at['cosine'][-1]:.3g}, 1cycle at {at['one_cycle'][-1]:.2g}."])


def lr_objective(log_rates: np.ndarray, steps: int = 300) -> np.ndarray:
    """Loss left after ``steps`` of gradient descent on the ravine ½(x² + 100y²) from its start, at learning rate
    η = 10^a. Gradient descent there is exact in closed form: each coordinate shrinks by (1 − ηκ) per step
    (κ = 1, 100), so x_T = (1 − η)^T x₀ and y_T = (1 − 100η)^T y₀; inf where it diverges past float range."""
    eta = 10.0 ** np.asarray(log_rates, dtype=float)
    x0, y0 = SURFACES[0].start
    with np.errstate(over="ignore", invalid="ignore"):
        value = 0.5 * (x0 ** 2 * (1 - eta) ** (2 * steps) + 100 * y0 ** 2 * (1 - 100 * eta) ** (2 * steps))
    return np.where(np.isfinite(value), value, np.inf)


def search_lab(quick: bool = False) -> LabResult:
    budgets = [9, 16] if quick else [9, 16, 25, 36]
    repeats = 10 if quick else 50
    low, high = -3.0, 0.0                       # log10 learning rate: the important parameter
    rng = np.random.default_rng(0)
    rows, measured = [], {"budgets": budgets, "repeats": repeats, "grid": {}, "random": {}}
    grid_points, random_points = {}, {}
    for budget in budgets:
        side = int(round(math.sqrt(budget)))
        grid = np.array(list(itertools.product(np.linspace(low, high, side), np.linspace(0, 1, side))))
        grid_best = float(lr_objective(grid[:, 0]).min())
        draws = [np.column_stack([rng.uniform(low, high, budget), rng.uniform(0, 1, budget)]) for _ in range(repeats)]
        scores = lr_objective(np.concatenate([d[:, 0] for d in draws])).reshape(repeats, budget).min(axis=1)
        grid_points[budget], random_points[budget] = grid, draws[0]
        distinct_grid = len(np.unique(grid[:, 0]))
        distinct_random = float(np.mean([len(np.unique(d[:, 0])) for d in draws]))
        measured["grid"][budget] = {"distinct_important": distinct_grid, "best": grid_best}
        measured["random"][budget] = {"distinct_important": distinct_random, "best_median": float(np.median(scores)),
                                      "beats_grid": float(np.mean(scores < grid_best))}
        rows.append([budget, distinct_grid, distinct_random, grid_best, float(np.median(scores)),
                     float(np.mean(scores < grid_best))])
    fig, axes = html.figure(9.0, 3.6, ncols=2)
    b = budgets[0]
    response = np.linspace(low, high, 200)
    curve = lr_objective(response)
    for ax, (title, pts) in zip(axes, (("grid", grid_points[b]), ("random", random_points[b]))):
        ax.scatter(pts[:, 0], pts[:, 1], c="C3", zorder=3)
        top = ax.twinx()
        top.semilogy(response, np.where(curve < 1e6, curve, np.nan), "k", lw=1)   # diverged rates left blank
        top.set_ylabel("loss (depends on lr only)", fontsize=7)
        ax.set(title=f"{title} search, {b} trials", xlabel="log10 learning rate (important)",
               ylabel="irrelevant parameter")
    return LabResult(
        "search", "grid vs random search",
        "When only a few hyper-parameters matter, random search beats grid search for the same budget "
        "(Bergstra & Bengio 2012, 'Random Search for Hyper-Parameter Optimization'): a grid of N trials over two "
        "parameters tries only √N values of each, random search N distinct values of every parameter. Here the "
        "objective is the loss left after 300 steps of gradient descent in an ill-conditioned ravine; it "
        "depends on the learning rate only, and its best rates lie in a narrow band just below divergence.",
        measured, [("Trials of each search (dots) over the response to the learning rate (line)", fig)],
        [("Grid vs random search", ["trials", "distinct lr (grid)", "distinct lr (random)", "best loss (grid)",
                                    "median best loss (random)", "P(random beats grid)"], rows)],
        [f"With {r[0]} trials grid search tries {r[1]} learning rates and random search {r[2]:g}; random search "
         f"finds a lower loss than the grid in {r[5]:.0%} of {repeats} repeats." for r in rows])
