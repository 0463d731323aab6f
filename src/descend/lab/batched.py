"""Many small one-hidden-layer networks trained at once, each on its own data set, for the bias-variance lab.

A member is Linear(d, width) → tanh → Linear(width, 1), initialised as ``torch.nn.Linear`` does (uniform in
±1/√fan_in) from its own seed. The loss is the sum of the members' mean squared errors, so each member receives
exactly the gradient it would receive alone; with an element-wise optimizer (GD, momentum, Adam, AdamW — from
:func:`descend.optim.create`) each member then follows exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from descend import optim


class BatchedMLP(torch.nn.Module):
    def __init__(self, seeds: Sequence[int], inputs: int, width: int):
        super().__init__()
        tensors = [self._init(seed, inputs, width) for seed in seeds]
        self.w1, self.b1, self.w2, self.b2 = (torch.nn.Parameter(torch.stack(t)) for t in zip(*tensors))

    @staticmethod
    def _init(seed: int, inputs: int, width: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(int(seed))

        def uniform(shape, fan_in):
            bound = 1 / math.sqrt(fan_in)
            return (torch.rand(shape, generator=g) * 2 - 1) * bound

        return (uniform((inputs, width), inputs), uniform((1, width), inputs), uniform((width, 1), width),
                uniform((1, 1), width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(members, n, inputs)`` -> ``(members, n, 1)``."""
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2 + self.b2


def fit(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, *, seeds: Sequence[int], width: int,
        epochs: int, optimizer: str = "adamw", lr: float = 0.01, weight_decay: float = 0.0,
        snapshots: Sequence[int] = ()) -> dict[int, torch.Tensor]:
    """Train one member per seed on its data set (full batch) and predict ``x_test``.

    ``x``: ``(members, n, d)``, ``y``: ``(members, n, 1)``, ``x_test``: ``(m, d)``. Returns predictions
    ``(members, m)`` after each epoch in ``snapshots`` and after the last one (key ``epochs``).
    """
    model = BatchedMLP(seeds, x.shape[-1], width)
    groups = [{"params": [model.w1, model.w2]}, {"params": [model.b1, model.b2], "weight_decay": 0.0}]  # biases
    opt = optim.create(optimizer, groups, lr=lr, weight_decay=weight_decay)                          # not decayed
    grid = x_test.expand(len(seeds), *x_test.shape)
    out = {}
    for epoch in range(1, epochs + 1):
        opt.zero_grad(set_to_none=True)
        ((model(x) - y) ** 2).mean(dim=(1, 2)).sum().backward()
        opt.step()
        if epoch in snapshots or epoch == epochs:
            with torch.no_grad():
                out[epoch] = model(grid)[..., 0].clone()
    return out
