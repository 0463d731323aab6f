"""Bias-variance decompositions of the expected test loss, measured by retraining on fresh data sets.

For a test point x, training sets D drawn from the data distribution, and random initialisations I:

- squared loss (Geman, Bienenstock & Doursat 1992)::

      E_{D,I,y}[(y − h(x))²] = (E h(x) − f(x))²  +  Var_{D,I} h(x)  +  E_y[(y − f(x))²]
                                   bias²              variance           noise

  and, by the law of total variance (Neal et al. 2018, "A Modern Take on the Bias-Variance Tradeoff in Neural
  Networks"), Var_{D,I} h = E_D[Var_I(h | D)] (initialisation) + Var_D(E_I[h | D]) (data sampling).
- 0-1 loss (Domingos 2000, "A Unified Bias-Variance Decomposition"): with y* the most likely label, y_m the
  main (most frequent) prediction, noise N = P(y ≠ y*), bias B = 1[y_m ≠ y*], variance V = P(h ≠ y_m)::

      E[1(h ≠ y)] = c1·N + B + c2·V,   c2 = 1 if B = 0 else −P(h = y* | h ≠ y_m),
                                       c1 = P(h = y*) − P(h ≠ y*)·P(y = h | y ≠ y*, h ≠ y*)

  so variance *lowers* the loss where the main prediction is wrong, and the three terms add up exactly.
- cross-entropy, through its Bregman-divergence form (Heskes 1998; Pfau 2013): with p the label distribution
  and h̄ ∝ exp(E log h) the normalised geometric mean of the predicted distributions::

      E[−log h(y)] = H(p) + KL(p ‖ h̄) + E KL(h̄ ‖ h)      (noise, bias, variance; exact)

Estimates are averaged over the test points; intervals come from the bootstrap over training sets. A term is
*resolved* when its 95% interval is within ±50% of its value (or within a tenth of the noise, for terms near
zero); :func:`bias_variance` draws more training sets, up to ``max_repetitions``, until bias and variance are
resolved. Where the fitted models have heavy-tailed predictions (a high-degree polynomial on 20 points) the variance
estimate keeps growing with the repetitions and never resolves: such points must be reported as unresolved, not
read as findings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from descend.errors import UserError
from descend.lab.stats import resamples

LOSSES = ("squared", "zero_one", "cross_entropy")
#: a term is resolved when its interval's half-width is at most this fraction of its value ...
RELATIVE_TOLERANCE = 0.5
#: ... or at most this fraction of the noise (terms near zero, where a relative width means nothing)
NOISE_TOLERANCE = 0.1
TERMS = ("expected_loss", "bias", "variance", "noise", "variance_init", "variance_data")


@dataclass
class Decomposition:
    """The measured terms (averages over test points). ``bias`` is bias² for the squared loss.

    ``variance_init`` / ``variance_data`` split the variance when more than one initialisation per data set was
    trained (else None). For the 0-1 loss ``net_variance`` (c2·V) and ``noise_term`` (c1·N) are what add up.
    ``intervals`` holds a (low, high) bootstrap interval per term; ``repetitions`` the training sets measured.
    """

    loss: str
    expected_loss: float
    bias: float
    variance: float
    noise: float
    variance_init: float | None = None
    variance_data: float | None = None
    net_variance: float | None = None
    noise_term: float | None = None
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    repetitions: int = 0

    def unresolved(self, terms=("bias", "variance"), *, relative: float = RELATIVE_TOLERANCE,
                   noise_fraction: float = NOISE_TOLERANCE) -> list[str]:
        """The ``terms`` whose interval's half-width exceeds ``relative`` × |value| and ``noise_fraction`` × the
        noise: estimates too uncertain to state (their interval, not their value, is what was measured)."""
        floor = noise_fraction * abs(self.noise)
        out = []
        for term in terms:
            if term in self.intervals:
                low, high = self.intervals[term]
                if (high - low) / 2 > max(relative * abs(getattr(self, term)), floor):
                    out.append(term)
        return out

    @property
    def total(self) -> float:
        """The sum of the terms: noise + bias + variance (the 0-1 loss: c1·N + B + c2·V)."""
        if self.loss == "zero_one":
            return self.noise_term + self.bias + self.net_variance
        return self.noise + self.bias + self.variance

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in (*TERMS, "net_variance", "noise_term") if getattr(self, k) is not None}
        return {"loss": self.loss, **out, "total": self.total, "repetitions": self.repetitions,
                "intervals": {k: list(v) for k, v in self.intervals.items()},
                "unresolved": self.unresolved(tuple(self.intervals))}


def bias_variance(model_factory: Callable, sampler: Callable, *, x_test, target: Callable, truth=None,
                  loss: str = "squared", repetitions: int = 50, inits: int = 1, noise_draws: int = 200,
                  bootstrap: int = 500, level: float = 0.95, seed: int = 0,
                  max_repetitions: int | None = None) -> Decomposition:
    """Decompose the expected loss of a learning procedure into bias, variance and noise.

    ``sampler(rng) -> (x, y)`` draws one training set; ``model_factory(x, y, seed) -> predict`` trains a model
    on it (``seed`` drives the initialisation and any other randomness of training) and returns a function
    ``predict(x_test) -> array``: values ``(n,)`` or ``(n, 1)`` for the squared loss, labels ``(n,)`` for
    ``zero_one``, class probabilities ``(n, C)`` for ``cross_entropy``. ``target(x, rng)`` draws noisy targets at
    given inputs (``noise_draws`` of them per test point estimate the noise); ``truth`` optionally gives E[y|x]
    at ``x_test`` (labels of y* for ``zero_one``, probabilities for ``cross_entropy``), else it is estimated
    from the draws. ``repetitions`` training sets, each trained ``inits`` times with different seeds (two or
    more split the variance into initialisation and data parts). With ``max_repetitions``, the number of training
    sets doubles (the first ones kept: set r is always the same draw) while bias or variance is unresolved
    (:meth:`Decomposition.unresolved`), up to that budget.

    Example — the bias and variance of a cubic fit to the sine set::

        from descend.data import synthetic
        sampler = lambda rng: synthetic.sine(20, rng)
        target = lambda x, rng: x + 2 * np.sin(1.5 * x) + rng.normal(0, synthetic.SINE_NOISE_STD, x.shape)
        fit = lambda x, y, seed: np.poly1d(np.polyfit(x[:, 0], y[:, 0], 3))
        d = bias_variance(lambda x, y, s: (lambda t: fit(x, y, s)(t[:, 0])), sampler,
                          x_test=np.linspace(0, 10, 100)[:, None], target=target)
    """
    if loss not in LOSSES:
        raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if repetitions < 2 or inits < 1:
        raise UserError(f"need repetitions >= 2 and inits >= 1, got {repetitions} and {inits}")
    budget = repetitions if max_repetitions is None else max_repetitions
    if budget < repetitions:
        raise UserError(f"max_repetitions ({budget}) must be at least repetitions ({repetitions})")
    rng = np.random.default_rng(seed)
    x_test = np.asarray(x_test)
    draws = np.stack([np.asarray(target(x_test, rng)) for _ in range(noise_draws)])
    predictions, wanted = [], repetitions
    while True:
        for r in range(len(predictions), wanted):
            x, y = sampler(np.random.default_rng([seed, 1, r]))
            predictions.append([np.asarray(model_factory(x, y, int(seed * 1_000_003 + r * inits + k))(x_test))
                                for k in range(inits)])
        result = decompose(np.asarray(predictions), draws, truth=truth, loss=loss, bootstrap=bootstrap,
                           level=level, seed=seed)
        if wanted >= budget or not result.unresolved():
            return result
        wanted = min(2 * wanted, budget)


def decompose(predictions, draws, *, truth=None, loss: str = "squared", bootstrap: int = 500, level: float = 0.95,
              seed: int = 0) -> Decomposition:
    """The decomposition from predictions already made: ``predictions`` has shape ``(R, K, n, ...)`` (R training
    sets, K initialisations each, n test points), ``draws`` ``(J, n, ...)`` noisy targets at the test points.
    Useful when many models train at once (a batched ensemble); :func:`bias_variance` calls it."""
    if loss not in LOSSES:
        raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    terms = _TERMS[loss]
    p, y = _shaped(np.asarray(predictions), np.asarray(draws), loss)
    result = terms(p, y, truth)
    index = resamples(p.shape[0], bootstrap, np.random.default_rng(seed))
    noise_index = resamples(y.shape[0], bootstrap, np.random.default_rng([seed, 1]))
    boot = [terms(p[i], y[j], truth) for i, j in zip(index, noise_index)]
    tail = (1 - level) / 2
    intervals = {}
    for name, value in result.items():
        if value is not None:
            values = np.array([b[name] for b in boot])
            intervals[name] = (float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail)))
    return Decomposition(loss=loss, intervals=intervals, repetitions=p.shape[0], **result)


def _shaped(p: np.ndarray, y: np.ndarray, loss: str) -> tuple[np.ndarray, np.ndarray]:
    if p.ndim < 3:
        raise UserError(f"predictions must have shape (repetitions, inits, n_test, ...), got {p.shape}")
    if loss == "squared":  # (R, K, n) values, (J, n) draws
        return p.reshape(p.shape[0], p.shape[1], -1).astype(float), y.reshape(y.shape[0], -1).astype(float)
    if loss == "zero_one":
        return p.reshape(p.shape[0], p.shape[1], -1).astype(int), y.reshape(y.shape[0], -1).astype(int)
    if p.ndim != 4:
        raise UserError(f"cross_entropy predictions must be probabilities (R, K, n, C), got shape {p.shape}")
    return p.astype(float), y.reshape(y.shape[0], -1).astype(int)


def _squared(p: np.ndarray, y: np.ndarray, truth) -> dict:
    """Unbiased estimators: bias² and the data variance are corrected for the finite number of repetitions and
    initialisations, so that they match the theory in expectation (see tests/test_lab_decomposition.py)."""
    R, K = p.shape[:2]
    per_set = p.mean(axis=1)                                   # (R, n): E_I[h | D]
    if truth is None:
        f = y.mean(axis=0)
        noise = y.var(axis=0, ddof=1)
        f_error = noise / y.shape[0]                           # Var of the estimated f
    else:
        f = np.asarray(truth, dtype=float).reshape(-1)
        noise = ((y - f) ** 2).mean(axis=0)
        f_error = 0.0
    spread = per_set.var(axis=0, ddof=1)                       # Var_D(E_I h) + E_D Var_I(h) / K
    init = p.var(axis=1, ddof=1).mean(axis=0) if K > 1 else None
    data = spread - init / K if K > 1 else None
    variance = data + init if K > 1 else spread
    bias = (per_set.mean(axis=0) - f) ** 2 - spread / R - f_error
    # E_{D,I,y}(y − h)² from the draws directly: E y² − 2 E y E h + E h²  (y independent of the training set)
    expected = (y ** 2).mean(axis=0) - 2 * y.mean(axis=0) * p.mean(axis=(0, 1)) + (p ** 2).mean(axis=(0, 1))
    return {"expected_loss": float(expected.mean()), "bias": float(bias.mean()), "variance": float(variance.mean()),
            "noise": float(noise.mean()), "variance_init": None if init is None else float(init.mean()),
            "variance_data": None if data is None else float(data.mean())}


def _frequencies(labels: np.ndarray, classes: int) -> np.ndarray:
    """(M, n) labels -> (n, classes) frequencies."""
    return np.stack([(labels == c).mean(axis=0) for c in range(classes)], axis=-1)


def _zero_one(p: np.ndarray, y: np.ndarray, truth) -> dict:
    classes = int(max(p.max(), y.max())) + 1
    ph = _frequencies(p.reshape(-1, p.shape[-1]), classes)    # (n, C): distribution of the prediction
    py = _frequencies(y, classes)                               # (n, C): distribution of the label
    n = np.arange(ph.shape[0])
    best = py.argmax(axis=1) if truth is None else np.asarray(truth, dtype=int).reshape(-1)
    main = ph.argmax(axis=1)
    noise = 1 - py[n, best]
    bias = (main != best).astype(float)
    variance = 1 - ph[n, main]
    right = ph[n, best]                                         # P(h = y*)
    # P(h ≠ y*)·P(y = h | y ≠ y*) = Σ_{c ≠ y*} P(h = c) P(y = c) / N
    agree_elsewhere = ((ph * py).sum(axis=1) - right * py[n, best]) / np.maximum(noise, 1e-300)
    c1 = right - agree_elsewhere
    c2 = np.where(bias == 0, 1.0, -np.where(variance > 0, right / np.maximum(variance, 1e-300), 0.0))
    expected = 1 - (ph * py).sum(axis=1)
    return {"expected_loss": float(expected.mean()), "bias": float(bias.mean()), "variance": float(variance.mean()),
            "noise": float(noise.mean()), "net_variance": float((c2 * variance).mean()),
            "noise_term": float((c1 * noise).mean())}


def _cross_entropy(p: np.ndarray, y: np.ndarray, truth) -> dict:
    tiny = 1e-12
    log_h = np.log(np.clip(p, tiny, None))                      # (R, K, n, C)
    py = _frequencies(y, p.shape[-1]) if truth is None else np.asarray(truth, dtype=float)
    mean_log = log_h.mean(axis=(0, 1))
    log_z = np.log(np.exp(mean_log).sum(axis=-1))               # (n,)
    log_bar = mean_log - log_z[:, None]                         # log h̄
    bar = np.exp(log_bar)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_py = np.where(py > 0, np.log(np.where(py > 0, py, 1.0)), 0.0)
    noise = -(py * log_py).sum(axis=-1)
    bias = (py * (log_py - log_bar)).sum(axis=-1)
    variance = -log_z
    set_mean = log_h.mean(axis=1)                               # (R, n, C): E_I log h per data set
    log_z_set = np.log(np.exp(set_mean).sum(axis=-1))           # (R, n)
    init = -log_z_set.mean(axis=0) if p.shape[1] > 1 else None
    data = (bar * (log_bar - (set_mean - log_z_set[..., None]))).sum(axis=-1).mean(axis=0) if init is not None else None
    expected = -(py * mean_log).sum(axis=-1)
    return {"expected_loss": float(expected.mean()), "bias": float(bias.mean()), "variance": float(variance.mean()),
            "noise": float(noise.mean()), "variance_init": None if init is None else float(init.mean()),
            "variance_data": None if data is None else float(data.mean())}


_TERMS = {"squared": _squared, "zero_one": _zero_one, "cross_entropy": _cross_entropy}
