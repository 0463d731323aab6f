"""A user's own project, outside descend: a small residual 1-D CNN factory, an nn.Module class, and a data loader.

descend never imports this file by itself: recipes name it (``[model] name = "mynets.py:resnet1d"``), and Python
code passes its functions (``descend.run(recipe, model=mynets.resnet1d)``).
"""

import numpy as np
import torch
from torch import nn


class Residual(nn.Module):
    """x + f(x), with f two 3-wide convolutions (He et al., 2016, "Deep Residual Learning")."""

    def __init__(self, channels: int):
        super().__init__()
        self.f = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv1d(channels, channels, 3, padding=1)
        )

    def forward(self, x):
        return torch.relu(x + self.f(x))


def resnet1d(input_shape, num_outputs, channels=8, blocks=1, dropout=0.0):
    """A residual CNN over a feature vector read as a one-channel signal of length input_shape[-1]."""
    return nn.Sequential(
        nn.Unflatten(1, (1, input_shape[-1])),
        nn.Conv1d(1, channels, 3, padding=1),
        nn.ReLU(),
        *[Residual(channels) for _ in range(blocks)],
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(channels, num_outputs),
    )


class TinyNet(nn.Module):
    """An nn.Module class as a factory: descend passes in_features and num_outputs."""

    def __init__(self, in_features, num_outputs, hidden=16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs))

    def forward(self, x):
        return self.net(x.flatten(1))


def waves(n=240, length=16, seed=0):
    """Three classes of noisy signals (a sine, a square wave, a ramp) as (x, y) arrays."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, length)
    y = rng.integers(0, 3, n)
    shapes = np.stack([np.sin(t), np.sign(np.sin(t)), t / np.pi - 1])
    x = shapes[y] + rng.normal(0, 0.3, (n, length))
    return x.astype(np.float32), y
