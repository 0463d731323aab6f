"""Damped Newton's method: x ← x − α(∇²f)⁻¹∇f."""

from __future__ import annotations

import pytest
import torch

import descend.optim as O
from descend.errors import UserError


def quadratic(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)   # positive definite, eigenvalues ≥ 0.5
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return a, b


def test_one_step_reaches_the_minimum_of_a_convex_quadratic():
    a, b = quadratic()
    w1, w2 = torch.zeros(2, dtype=torch.float64, requires_grad=True), torch.zeros(4, dtype=torch.float64,
                                                                                  requires_grad=True)
    opt = O.create("newton", [w1, w2])
    assert opt.needs_closure

    def closure():
        x = torch.cat([w1, w2])
        return 0.5 * x @ a @ x - b @ x

    opt.step(closure)
    expected = torch.linalg.solve(a, b)
    # 1e-10: one eigendecomposition of a well-conditioned 6×6 matrix in float64
    assert torch.allclose(torch.cat([w1, w2]).detach(), expected, rtol=1e-10, atol=1e-12)


def test_l2_decay_is_part_of_the_newton_system():
    a, b = quadratic(1)
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = O.create("newton", [w], weight_decay=0.3, exclude_from_decay=[])
    opt.step(lambda: 0.5 * w @ a @ w - b @ w)
    expected = torch.linalg.solve(a + 0.3 * torch.eye(6, dtype=torch.float64), b)  # minimum of f + 0.15‖w‖²
    assert torch.allclose(w.detach(), expected, rtol=1e-10, atol=1e-12)


def test_damping_turns_a_saddle_into_descent():
    """f = x² − y² at (1, 0.1): the undamped Newton step jumps to the saddle (0, 0); with |λ| the y
    direction is descended instead, and the loss goes down."""
    w = torch.tensor([1.0, 0.1], dtype=torch.float64, requires_grad=True)
    opt = O.create("newton", [w], lr=0.5)
    f = lambda: w[0] ** 2 - w[1] ** 2  # noqa: E731
    before = f().item()
    opt.step(f)
    assert w[0].item() == pytest.approx(0.5) and w[1].item() == pytest.approx(0.15)
    assert f().item() < before


def test_newton_trains_a_tiny_network_with_batchnorm_free_layers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    x = torch.randn(64, 3, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    opt = O.create("newton", model, lr=0.5, damping=1e-3)
    loss = lambda: ((model(x) - y) ** 2).mean()  # noqa: E731
    start = loss().item()
    for _ in range(10):
        opt.step(loss)
    assert loss().item() < 0.5 * start


def test_newton_needs_a_closure():
    opt = O.create("newton", [torch.zeros(2, requires_grad=True)])
    with pytest.raises(UserError, match="closure"):
        opt.step()
