"""The bias-variance decomposition against theory: ridge regression on a fixed linear-Gaussian design, where bias
and variance are known in closed form, and the exact identities of the 0-1 and cross-entropy decompositions."""

from __future__ import annotations

import numpy as np
import pytest

from descend.errors import UserError
from descend.lab import bias_variance, decompose
from descend.lab.stats import bootstrap_ci, probability_of_improvement, ranks

SIGMA, LAM = 0.5, 2.0
X = np.random.default_rng(7).normal(size=(20, 3))
BETA = np.array([1.0, -2.0, 0.5])
X0 = np.random.default_rng(8).normal(size=(10, 3))


def _ridge(x, y, seed):
    w = np.linalg.solve(x.T @ x + LAM * np.eye(3), x.T @ y)
    return lambda t: t @ w


def _theory():
    a = np.linalg.inv(X.T @ X + LAM * np.eye(3))
    bias = X0 @ (a @ X.T @ X @ BETA - BETA)
    variance = SIGMA ** 2 * np.einsum("ij,jk,ik->i", X0, a @ X.T @ X @ a, X0)
    return float((bias ** 2).mean()), float(variance.mean())


def _sampler(rng):
    return X, X @ BETA + rng.normal(0, SIGMA, 20)


def _target(x, rng):
    return x @ BETA + rng.normal(0, SIGMA, len(x))


def test_ridge_bias_and_variance_match_theory():
    bias2, variance = _theory()
    d = bias_variance(_ridge, _sampler, x_test=X0, target=_target, truth=X0 @ BETA, repetitions=600,
                      noise_draws=2000, bootstrap=300)
    assert d.bias == pytest.approx(bias2, rel=0.1)
    assert d.variance == pytest.approx(variance, rel=0.12)
    assert d.noise == pytest.approx(SIGMA ** 2, rel=0.05)
    for name, value in (("bias", bias2), ("variance", variance)):
        low, high = d.intervals[name]
        assert low <= value <= high, (name, low, value, high)
    assert d.total == pytest.approx(d.expected_loss, rel=0.05)


def test_variance_splits_into_initialisation_and_data_parts():
    tau = 0.3  # each seed adds its own fixed N(0, τ²) offsets: initialisation variance τ², data variance unchanged

    def jittered(x, y, seed):
        fit, offset = _ridge(x, y, seed), np.random.default_rng(seed).normal(0, tau, len(X0))
        return lambda t: fit(t) + offset

    d = bias_variance(jittered, _sampler, x_test=X0, target=_target, truth=X0 @ BETA, repetitions=300, inits=4,
                      noise_draws=500, bootstrap=200)
    assert d.variance_init == pytest.approx(tau ** 2, rel=0.1)
    assert d.variance_data == pytest.approx(_theory()[1], rel=0.15)
    assert d.variance == pytest.approx(d.variance_init + d.variance_data)


def test_zero_one_terms_add_up_exactly():
    """Domingos (2000): c1·N + B + c2·V equals the expected 0-1 loss, with some points biased and some not."""
    rng = np.random.default_rng(0)
    n, classes = 40, 3
    label_p = rng.dirichlet(np.ones(classes), size=n)
    pred_p = rng.dirichlet(np.ones(classes) * 0.5, size=n)
    draws = np.stack([[rng.choice(classes, p=q) for q in label_p] for _ in range(300)])
    preds = np.stack([[[rng.choice(classes, p=q) for q in pred_p]] for _ in range(200)])
    d = decompose(preds, draws, loss="zero_one", bootstrap=20)
    assert 0 < d.bias < 1 and d.net_variance < d.variance
    assert d.total == pytest.approx(d.expected_loss, abs=1e-12)
    direct = (preds[:, 0, None, :] != draws[None]).mean()
    assert d.expected_loss == pytest.approx(direct, abs=1e-12)


def test_cross_entropy_bregman_terms_add_up_and_split_exactly():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(30, 3, 25))          # 30 data sets x 3 inits x 25 points
    draws = rng.integers(0, 4, size=(500, 25))
    d = decompose(probs, draws, loss="cross_entropy", bootstrap=20)
    assert d.total == pytest.approx(d.expected_loss, abs=1e-9)
    assert d.variance == pytest.approx(d.variance_init + d.variance_data, abs=1e-9)
    assert min(d.bias, d.variance, d.noise, d.variance_init, d.variance_data) >= 0


def test_bad_arguments_are_user_errors():
    with pytest.raises(UserError, match="loss must be one of"):
        bias_variance(_ridge, _sampler, x_test=X0, target=_target, loss="hinge")
    with pytest.raises(UserError, match="repetitions"):
        bias_variance(_ridge, _sampler, x_test=X0, target=_target, repetitions=1)


def test_interval_statistics():
    low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= low < 2.5 < high <= 4.0
    assert bootstrap_ci([5.0]) == (5.0, 5.0)
    assert probability_of_improvement([2, 3, 4], [0, 0, 1], higher_is_better=True) == pytest.approx(1.0)
    assert probability_of_improvement([1, 1], [1, 1], higher_is_better=True) == pytest.approx(0.5)
    assert probability_of_improvement([0.1], [0.5], higher_is_better=False) == pytest.approx(1.0)
    assert ranks({"a": 0.2, "b": 0.1, "c": float("nan")}, higher_is_better=False) == {"b": 1, "a": 2, "c": 3}
