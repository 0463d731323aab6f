"""Labs ``bias-variance`` (the U-curve over model complexity) and ``double-descent`` (its modern caveat)."""

from __future__ import annotations

import numpy as np
import torch

from descend import data
from descend.data import synthetic
from descend.lab import batched
from descend.lab.base import LabResult
from descend.lab.decomposition import Decomposition, bias_variance, decompose
from descend.report import html

N_TRAIN, X_RANGE = 20, (0.0, 10.0)
# test points inside [1, 9]: near the ends of [0, 10] a training set often has no sample, and a high-degree
# polynomial extrapolating there gives heavy-tailed variance that no 50 repetitions can estimate
X_TEST = np.linspace(1.0, 9.0, 100)[:, None]
X_MID, X_HALF, Y_MID, Y_HALF = 5.0, 5.0, 5.0, 5.0   # fixed affine scaling of the sine set for the networks
LR = 0.01                                             # Adam/AdamW, full batch
FLOOR = 1e-3                                          # log-scale plots show smaller (or negative) estimates here


def truth(x: np.ndarray) -> np.ndarray:
    return (x + 2 * np.sin(1.5 * x))[:, 0]


def target(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return truth(x) + rng.normal(0, synthetic.SINE_NOISE_STD, len(x))


def sampler(rng: np.random.Generator):
    return synthetic.sine(N_TRAIN, rng, x_range=X_RANGE)


def polynomial(degree: int):
    """A least-squares polynomial of ``degree`` (numpy's Polynomial.fit, on a scaled domain)."""
    def factory(x, y, seed):
        fitted = np.polynomial.Polynomial.fit(x[:, 0], y[:, 0], degree)
        return lambda t: fitted(t[:, 0])
    return factory


def network_terms(reps: int, inits: int, *, widths=(), epochs: int = 1000, snapshots=(), decays=(0.0,),
                  width: int = 32, seed: int = 0) -> dict:
    """Bias-variance terms of tanh MLPs (Adam/AdamW, full batch) trained at once on ``reps`` sine sets ×
    ``inits`` seeds. Returns {("width", w) | ("epochs", e) | ("decay", λ): Decomposition}."""
    sets = [sampler(np.random.default_rng([seed, 1, r])) for r in range(reps)]
    x = torch.tensor(np.stack([(s[0] - X_MID) / X_HALF for s in sets]), dtype=torch.float32)
    y = torch.tensor(np.stack([(s[1] - Y_MID) / Y_HALF for s in sets]), dtype=torch.float32)
    x, y = x.repeat_interleave(inits, 0), y.repeat_interleave(inits, 0)     # member r·K + k: set r, init k
    grid = torch.tensor((X_TEST - X_MID) / X_HALF, dtype=torch.float32)
    seeds = [seed * 1_000_003 + m for m in range(reps * inits)]
    draws = np.stack([target(X_TEST, np.random.default_rng([seed, 2, j])) for j in range(200)])

    def terms(pred: torch.Tensor) -> Decomposition:
        values = pred.numpy().reshape(reps, inits, -1) * Y_HALF + Y_MID
        return decompose(values, draws, truth=truth(X_TEST), bootstrap=200, seed=seed)

    # one training per distinct (width, epochs, decay): the width sweep, the epoch snapshots and the decay sweep
    # share their common run (width ``width``, no decay), each predicting at every epoch any of them asks for
    plan: dict[tuple[int, int, float], set[int]] = {}
    for w in widths:
        plan.setdefault((w, epochs, 0.0), set())
    if snapshots:
        plan.setdefault((width, max(snapshots), 0.0), set()).update(snapshots)
    for lam in decays:
        plan.setdefault((width, epochs, float(lam)), set())
    preds = {(w, e, lam): batched.fit(x, y, grid, seeds=seeds, width=w, epochs=e, lr=LR, weight_decay=lam,
                                      snapshots=sorted(at)) for (w, e, lam), at in plan.items()}
    out = {("width", w): terms(preds[(w, epochs, 0.0)][epochs]) for w in widths}
    out.update({("epochs", e): terms(preds[(width, max(snapshots), 0.0)][e]) for e in snapshots})
    out.update({("decay", lam): terms(preds[(width, epochs, float(lam))][epochs]) for lam in decays})
    return out


def bias_variance_lab(quick: bool = False) -> LabResult:
    reps = 20 if quick else 50
    degrees = list(range(0, 12))
    poly = {d: bias_variance(polynomial(d), sampler, x_test=X_TEST, target=target, truth=truth(X_TEST),
                             repetitions=reps, bootstrap=200) for d in degrees}
    nets = network_terms(
        reps if not quick else 8, 2, widths=(4, 32) if quick else (1, 2, 4, 8, 16, 32, 64, 128),
        epochs=1000 if quick else 1500, snapshots=(30, 1000) if quick else (10, 30, 100, 300, 1000, 2000),
        decays=(0.0, 3.0) if quick else (0.0, 0.03, 0.3, 3.0), width=32)
    axes = {"degree": {d: poly[d] for d in degrees}}
    for kind, label in (("width", "MLP width"), ("epochs", "epochs"), ("decay", "weight decay λ (AdamW)")):
        axes[label] = {k[1]: v for k, v in nets.items() if k[0] == kind}
    measured = {name: {str(k): v.as_dict() for k, v in series.items()} for name, series in axes.items()}
    best = min(degrees, key=lambda d: poly[d].expected_loss)
    widths = axes["MLP width"]
    w_lo, w_hi = min(widths), max(widths)
    w_peak = max(widths, key=lambda w: widths[w].variance_init)
    data_parts = [t.variance_data for t in widths.values()]
    findings = [
        f"Polynomial degree 1 → 5 → 9 (test points in [1, 9]): bias² {max(poly[1].bias, 0):.3g} → "
        f"{max(poly[5].bias, 0):.3g} → {max(poly[9].bias, 0):.3g}, variance {poly[1].variance:.3g} → "
        f"{poly[5].variance:.3g} → {poly[9].variance:.3g}; the expected test loss is lowest at degree {best} "
        f"({poly[best].expected_loss:.3g}; noise σ² = {poly[best].noise:.3g}).",
        f"MLP width {w_lo} → {w_hi} ({reps if not quick else 8} data sets × 2 initialisations): the variance from "
        f"initialisation goes {widths[w_lo].variance_init:.3g} → {widths[w_hi].variance_init:.3g}"
        + (f" (peak {widths[w_peak].variance_init:.3g} at width {w_peak})" if w_peak not in (w_lo, w_hi) else "")
        + f", while the variance from the data sample stays between "
        f"{min(data_parts):.3g} and {max(data_parts):.3g}; the test loss goes {widths[w_lo].expected_loss:.3g} → "
        f"{widths[w_hi].expected_loss:.3g}.",
        "Each term's 95% bootstrap interval over the training sets is in lab.json; bias² and the data variance "
        "are corrected for the finite number of repetitions, so their sum matches the measured loss in "
        "expectation (a small bias² can then come out slightly below zero; it is shown as 0 here).",
    ]
    figures = [(f"Bias-variance decomposition over {name} (sine set, {N_TRAIN} samples)", _curve(name, series))
               for name, series in axes.items()]
    figures.insert(1, ("Fits of degree 1, 3 and 9 on 20 of the training sets", _fits(reps)))
    rows = [[d, t.bias, t.variance, t.noise, t.total, t.expected_loss] for d, t in poly.items()]
    return LabResult(
        "bias-variance", "the bias-variance trade-off",
        "The expected squared error of a learned model splits into bias² (how far the average fit is from the "
        "true function), variance (how much the fit moves with the training sample) and noise (Geman, "
        "Bienenstock & Doursat 1992). Richer models lower bias and raise variance, so the test error traces a "
        "U over complexity. For networks, Neal et al. (2018) split the variance into a part due to the random "
        "initialisation and a part due to the data sample: with width the former falls while the latter "
        "stays roughly flat. Data: y = x + 2 sin(1.5x) + N(0, 0.2), 20 samples per training set.",
        measured, figures,
        [("Polynomial degree", ["degree", "bias²", "variance", "noise", "sum", "measured loss"], rows)], findings)


def _curve(name: str, series: dict) -> object:
    fig, ax = html.figure(7.6, 3.8)
    keys = list(series)
    xs = np.arange(len(keys))
    for term, style in (("bias", "o-"), ("variance", "s-"), ("noise", ":"), ("expected_loss", "k^-")):
        values = np.maximum([getattr(series[k], term) for k in keys], FLOOR)
        ax.plot(xs, values, style, label={"bias": "bias²", "expected_loss": "test loss"}.get(term, term))
        if term in ("bias", "variance"):
            lo, hi = np.maximum(np.array([series[k].intervals[term] for k in keys]), FLOOR).T
            ax.fill_between(xs, lo, hi, alpha=0.2)
    if series[keys[0]].variance_init is not None:
        for part, label in (("variance_init", "variance (initialisation)"),
                            ("variance_data", "variance (data sample)")):
            ax.plot(xs, np.maximum([getattr(series[k], part) for k in keys], FLOOR), "--", label=label)
    ax.set_xticks(xs, [f"{k:g}" for k in keys])
    ax.set_yscale("log")
    ax.set(xlabel=name, ylabel=f"squared error (floor {FLOOR:g})")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))   # beside the axes: no curve hidden
    ax.grid(alpha=0.3)
    return fig


def _fits(reps: int) -> object:
    fig, axes = html.figure(9.0, 3.0, ncols=3)
    grid = X_TEST[:, 0]
    for ax, degree in zip(axes, (1, 3, 9)):
        for r in range(min(reps, 20)):
            x, y = sampler(np.random.default_rng([0, 1, r]))
            ax.plot(grid, polynomial(degree)(x, y, r)(X_TEST), lw=0.6, alpha=0.5)
        ax.plot(grid, truth(X_TEST), "k", lw=2)
        ax.set(ylim=(-3, 14), title=f"degree {degree}", xlabel="x")
    return fig


def double_descent_lab(quick: bool = False) -> LabResult:
    """Random-features networks (Rahimi & Recht 2007) fitted to the minimum-norm solution on 100 noisy digits."""
    bundle = data.load("digits", val_fraction=0.0, test_fraction=0.3, scale="standardize", seed=0)
    n, noise = 100, 0.2
    rng = np.random.default_rng(0)
    x = bundle.train.x[:n].double()
    labels = bundle.train.y[:n].clone()
    flip = torch.from_numpy(rng.random(n) < noise)
    labels[flip] = torch.from_numpy(rng.integers(0, 10, int(flip.sum())))
    targets = torch.nn.functional.one_hot(labels, 10).double()
    x_test, y_test = bundle.test.x.double(), bundle.test.y
    widths = [10, 50, 80, 100, 120, 200, 1000] if quick else [5, 10, 20, 40, 60, 80, 90, 100, 110, 120, 150, 200,
                                                              300, 500, 1000, 2000, 4000]
    seeds = 3 if quick else 10
    errors = np.zeros((seeds, len(widths)))
    train_errors = np.zeros_like(errors)
    for s in range(seeds):
        g = torch.Generator().manual_seed(s)
        for j, p in enumerate(widths):
            w = torch.randn(x.shape[1], p, generator=g, dtype=torch.float64) / np.sqrt(x.shape[1])
            features = torch.relu(x @ w)
            beta = torch.linalg.pinv(features) @ targets            # minimum-norm least squares
            errors[s, j] = float((torch.relu(x_test @ w) @ beta).argmax(1).ne(y_test).double().mean())
            train_errors[s, j] = float((features @ beta).argmax(1).ne(labels).double().mean())
    mean = errors.mean(axis=0)
    peak = widths[int(mean.argmax())]
    measured = {"widths": widths, "test_error": mean, "train_error": train_errors.mean(axis=0),
                "test_error_std": errors.std(axis=0), "n_train": n, "label_noise": noise, "peak_width": peak}
    at = dict(zip(widths, mean))
    fig, ax = html.figure(6.0, 3.8)
    ax.semilogx(widths, mean, "o-", label="test error")
    ax.fill_between(widths, mean - errors.std(axis=0), mean + errors.std(axis=0), alpha=0.2)
    ax.semilogx(widths, train_errors.mean(axis=0), "s--", label="training error")
    ax.axvline(n, color="k", ls=":", label="width = training samples")
    ax.set(xlabel="hidden width (random ReLU features)", ylabel="0-1 error")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return LabResult(
        "double-descent", "double descent",
        "The U-curve is not the whole story: past the interpolation threshold, where the model can fit every "
        "training label (here width = number of samples), the test error falls again as width grows (Belkin, "
        "Hsu, Ma & Mandal 2019; Nakkiran et al. 2019, 'Deep Double Descent'). The network is a two-layer ReLU "
        "network whose first layer stays at its random initialisation (random features, Rahimi & Recht 2007) "
        "and whose output layer is the minimum-norm least-squares fit, the solution gradient descent from zero "
        f"converges to. Data: {n} scikit-learn digits with {noise:.0%} of the labels replaced at random.",
        measured, [("Test and training error vs width (mean ± std over feature seeds)", fig)],
        [("Error by width", ["width", "test error", "training error"],
          [[w, e, t] for w, e, t in zip(widths, mean, train_errors.mean(axis=0))])],
        [f"Test error peaks at width {peak} ({mean.max():.3f}); at width 10 it is {at[10]:.3f} and at width "
         f"{widths[-1]} {mean[-1]:.3f}; the training error reaches 0 from width {n} on."])
