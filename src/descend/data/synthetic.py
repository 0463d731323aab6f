"""Two synthetic regression sets, as pure functions of their parameters and a numpy generator: a noisy sine for
the bias-variance decomposition and a high-dimensional linear model for weight decay."""

from __future__ import annotations

import math

import numpy as np

SINE_NOISE_STD = math.sqrt(0.2)


def sine(
    n: int,
    rng: np.random.Generator,
    *,
    noise_std: float = SINE_NOISE_STD,
    x_range: tuple[float, float] = (0.0, 10.0),
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of a noisy sine, the data of the bias-variance decomposition (20 samples per set)::

        y = x + 2 sin(1.5 x) + N(0, 0.2),   x ~ Uniform(x_range)

    N(0, 0.2) is read as N(μ, σ²), the convention of :func:`linear_highdim`'s N(0, 0.01²): 0.2 is the
    noise *variance*, so the default ``noise_std`` is σ = √0.2 ≈ 0.447. Pass ``noise_std=0.2`` for the other
    reading. Returns ``x`` of shape ``(n, 1)`` and ``y`` of shape ``(n, 1)``, float64.
    """
    x = rng.uniform(x_range[0], x_range[1], size=(n, 1))
    y = x + 2.0 * np.sin(1.5 * x) + rng.normal(0.0, noise_std, size=(n, 1))
    return x, y


def linear_highdim(
    n: int, rng: np.random.Generator, *, d: int = 200, noise_std: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of the weight-decay example of *Dive into Deep Learning* (Zhang et al.), section "Weight
    Decay"::

        y = 0.05 + Σ_{i=1..d} 0.01 x_i + ε,   ε ~ N(0, 0.01²),   x ~ N(0, I_d)

    With d = 200 inputs and only 20 training samples, an unregularized linear model overfits,
    which makes the case for weight decay. Returns ``x`` of shape ``(n, d)`` and ``y`` of shape ``(n, 1)``, float64.
    """
    x = rng.normal(0.0, 1.0, size=(n, d))
    y = 0.05 + 0.01 * x.sum(axis=1, keepdims=True) + rng.normal(0.0, noise_std, size=(n, 1))
    return x, y
