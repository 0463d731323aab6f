"""Labs ``bias-variance`` (the U-curve over model complexity) and ``double-descent`` (its modern caveat)."""

from __future__ import annotations

import numpy as np
import torch

from descend import data
from descend.data import synthetic
from descend.lab import batched, claims
from descend.lab.base import LabResult
from descend.lab.decomposition import Decomposition, bias_variance, decompose
from descend.lab.stats import bootstrap_ci
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


#: what each term is called in the report's sentences
LABELS = {"bias": "Bias²", "variance": "The variance", "expected_loss": "The expected test loss",
          "variance_init": "The variance from initialisation", "variance_data": "The variance from the data sample"}
SHORT = {"bias": "bias²", "variance": "variance", "expected_loss": "test loss"}
#: per sweep: its name in sentences, and the terms compared from its first to its last resolved point
SWEEPS = {"degree": ("degree", ("bias", "variance")),
          "MLP width": ("width", ("variance_init", "variance_data", "expected_loss")),
          "epochs": ("epoch", ("bias", "variance_init")),
          "weight decay λ (AdamW)": ("λ", ("bias", "variance", "expected_loss"))}


def estimate(d: Decomposition, term: str) -> claims.Estimate:
    low, high = d.intervals[term]
    return claims.Estimate(getattr(d, term), low, high)


def resolved_keys(series: dict, term: str) -> list:
    return [k for k, d in series.items() if not d.unresolved((term,))]


def sweep_claims(axis: str, series: dict, terms) -> list[claims.Claim]:
    """Each term from the first to the last point of the sweep where it is resolved (none with fewer than 2)."""
    out = []
    for term in terms:
        keys = resolved_keys(series, term)
        if len(keys) >= 2:
            out.append(claims.Claim(axis, term, keys[0], keys[-1], estimate(series[keys[0]], term),
                                    estimate(series[keys[-1]], term)))
    return out


def findings_for(axis: str, series: dict) -> tuple[list[str], list[claims.Claim]]:
    """The sentences of one sweep, generated from its numbers: a change where the intervals separate, the lowest
    test loss with the points it is not distinguished from, and the points left unresolved."""
    word, terms = SWEEPS[axis]
    found = sweep_claims(axis, series, terms)
    sentences = [c.sentence(LABELS[c.quantity], word, clip_at_zero=c.quantity == "bias") for c in found]
    keys = resolved_keys(series, "expected_loss")
    if keys:
        points = {k: estimate(series[k], "expected_loss") for k in keys}
        best, tied = claims.lowest(points, keys)
        sentences.append(f"The expected test loss is lowest at {word} {claims.key_text(best)} ({points[best].text()})"
                         + (f", not distinguished from {word} {', '.join(map(claims.key_text, tied))} (overlapping "
                            "intervals)"
                            if tied else ", below every other resolved point"))
    blurred = {k: d.unresolved(("bias", "variance", "expected_loss")) for k, d in series.items()}
    blurred = {k: v for k, v in blurred.items() if v}
    if blurred:
        worst = max(blurred, key=lambda k: series[k].variance)
        sentences.append(
            f"At {word} {', '.join(map(claims.key_text, blurred))} some estimates stay unresolved after "
            f"{max(series[k].repetitions for k in blurred)} training sets (95% intervals wider than ±50%: the "
            f"variance at {word} {claims.key_text(worst)} is {estimate(series[worst], 'variance').text()}); they "
            "are drawn hollow and marked in the table, and no sentence here rests on them")
    return [s + "." for s in sentences], found


def bias_variance_lab(quick: bool = False) -> LabResult:
    # polynomials are cheap: start where the bootstrap intervals of the well-behaved degrees are trustworthy (with
    # 20 sets a heavy-tailed degree can look resolved by missing its tail), double up to the budget where not
    reps, budget = (100, 800) if quick else (200, 1600)
    degrees = list(range(0, 12))
    poly = {d: bias_variance(polynomial(d), sampler, x_test=X_TEST, target=target, truth=truth(X_TEST),
                             repetitions=reps, max_repetitions=budget, bootstrap=200) for d in degrees}
    net_reps = 8 if quick else 50
    nets = network_terms(
        net_reps, 2, widths=(4, 32) if quick else (1, 2, 4, 8, 16, 32, 64, 128),
        epochs=1000 if quick else 1500, snapshots=(30, 1000) if quick else (10, 30, 100, 300, 1000, 2000),
        decays=(0.0, 3.0) if quick else (0.0, 0.03, 0.3, 3.0), width=32)
    axes = {"degree": {d: poly[d] for d in degrees}}
    for kind, label in (("width", "MLP width"), ("epochs", "epochs"), ("decay", "weight decay λ (AdamW)")):
        axes[label] = {k[1]: v for k, v in nets.items() if k[0] == kind}
    findings, found = [], []
    for name, series in axes.items():
        sentences, stated = findings_for(name, series)
        found += stated
        where = (f"Polynomial degree (least squares, {reps} to {budget} training sets, more where the intervals "
                 "are wide)" if name == "degree" else f"{name} ({net_reps} data sets × 2 initialisations)")
        findings.append(f"{where}: " + " ".join(sentences))
    findings.append("Each term's 95% bootstrap interval over the training sets is in lab.json; bias² and the data "
                    "variance are corrected for the finite number of repetitions, so their sum matches the measured "
                    "loss in expectation (a small bias² can then come out slightly below zero; it is shown as 0).")
    measured = {name: {str(k): v.as_dict() for k, v in series.items()} for name, series in axes.items()}
    measured["claims"] = [c.as_dict() for c in found]
    figures = [(f"Bias-variance decomposition over {name} (sine set, {N_TRAIN} samples; hollow: unresolved)",
                _curve(name, series)) for name, series in axes.items()]
    figures.insert(1, ("Fits of degree 1, 3 and 9 on 20 of the training sets", _fits(reps)))
    return LabResult(
        "bias-variance", "the bias-variance trade-off",
        "The expected squared error of a learned model splits into bias² (how far the average fit is from the "
        "true function), variance (how much the fit moves with the training sample) and noise (Geman, "
        "Bienenstock & Doursat 1992). The classic account: richer models lower bias and raise variance, so the "
        "test error traces a U over complexity. For networks, Neal et al. (2018) split the variance into a part "
        "due to the random initialisation and a part due to the data sample, and report that with width the "
        "former falls while the latter stays roughly flat. Data: y = x + 2 sin(1.5x) + N(0, 0.2), 20 samples per "
        "training set. The findings below state only what this run's 95% intervals support.",
        measured, figures, [("Polynomial degree", TABLE_HEADER, [_row(d, t) for d, t in poly.items()])], findings)


TABLE_HEADER = ["degree", "training sets", "bias²", "bias² 95%", "variance", "variance 95%", "noise", "sum",
                "measured loss", "estimate"]


def _row(key, t: Decomposition) -> list:
    """A table row; bias² is shown clipped at 0 (its corrected estimate may dip below, the quantity cannot)."""
    blurred = t.unresolved(("bias", "variance", "expected_loss"))
    status = ("unresolved: " + ", ".join(SHORT[b] for b in blurred)) if blurred else "resolved"
    return [key, t.repetitions, max(t.bias, 0.0), _interval(t, "bias", clip=True), t.variance,
            _interval(t, "variance"), t.noise, t.total, t.expected_loss, status]


def _interval(t: Decomposition, term: str, clip: bool = False) -> str:
    return "[{:.3g}, {:.3g}]".format(*(max(x, 0.0) if clip else x for x in t.intervals[term]))


def _curve(name: str, series: dict) -> object:
    fig, ax = html.figure(7.6, 3.8)
    keys = list(series)
    xs = np.arange(len(keys))
    terms = [("bias", "o-", "bias²"), ("variance", "s-", "variance"), ("noise", ":", "noise"),
             ("expected_loss", "^-", "test loss")]
    if series[keys[0]].variance_init is not None:
        terms += [("variance_init", "--", "variance (initialisation)"), ("variance_data", "--", "variance (data)")]
    for i, (term, style, label) in enumerate(terms):
        values = np.maximum([getattr(series[k], term) for k in keys], FLOOR)
        sure = np.array([not series[k].unresolved((term,)) for k in keys])
        line, = ax.plot(xs, np.where(sure, values, np.nan), style, color=f"C{i}", label=label)
        if (~sure).any():                                        # unresolved: hollow markers, no line, no band
            ax.plot(xs[~sure], values[~sure], line.get_marker() if line.get_marker() != "None" else "o",
                    mfc="none", color=f"C{i}", ls="none")
        if term in ("bias", "variance"):
            lo, hi = np.maximum(np.array([series[k].intervals[term] for k in keys]), FLOOR).T
            ax.fill_between(xs, np.where(sure, lo, np.nan), np.where(sure, hi, np.nan), color=f"C{i}", alpha=0.2)
    ax.plot([], [], "o", mfc="none", color="gray", ls="none", label="unresolved (interval > ±50%)")
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
                "test_error_std": errors.std(axis=0), "n_train": n, "label_noise": noise, "peak_width": peak,
                "test_error_interval": [bootstrap_ci(errors[:, j], seed=j) for j in range(len(widths))],
                "train_error_max": train_errors.max(axis=0)}
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
        double_descent_findings(widths, errors, train_errors, n))


def double_descent_findings(widths: list[int], errors: np.ndarray, train_errors: np.ndarray, n: int) -> list[str]:
    """Sentences from the measured errors (rows: feature seeds, columns: widths), each as strong as the 95%
    bootstrap intervals over the seeds allow."""
    points = {w: claims.Estimate(float(errors[:, j].mean()), *bootstrap_ci(errors[:, j], seed=j))
              for j, w in enumerate(widths)}
    peak = max(widths, key=lambda w: points[w].value)
    ends = [w for w in (widths[0], widths[-1]) if w != peak]
    above = [w for w in ends if claims.direction(points[w], points[peak]) == claims.RISES]
    text = (f"The test error is highest at width {peak} ({points[peak].text()} over {errors.shape[0]} feature "
            "seeds)")
    if above == ends:
        text += ", above " + " and ".join(f"width {w} ({points[w].text()})" for w in ends) + ": a peak."
    else:
        text += (", not separated from " + " and ".join(f"width {w} ({points[w].text()})" for w in ends if w not in
                                                        above) + " (overlapping intervals): no peak is resolved.")
    fits = [w for j, w in enumerate(widths) if np.all(train_errors[:, j:] == 0)]
    fitted = (f"The training error is 0 for every seed from width {fits[0]} on (the training set has {n} samples)."
              if fits else "No width fits every training label.")
    return [text, fitted]
