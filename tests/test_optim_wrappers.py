"""SAM and Lookahead around descend's optimizers, against float64 implementations of the papers' rules:

- SAM (Foret et al. 2021, Algorithm 1): ε = ρ·g/‖g‖₂, g_SAM = ∇L(w + ε), then the base step from w with g_SAM;
- Lookahead (Zhang et al. 2019, Algorithm 1): k fast steps, then φ ← φ + α(θ − φ), θ ← φ.

The references below are written from the papers' pseudo-code with plain tensors (a hand-written SGD with heavy-ball
momentum as torch's, and Adam as Kingma & Ba's Algorithm 1). Both sides run in float64; the operations differ in
order (foreach kernels versus per-tensor loops), so weights agree to rtol 1e-10 after 60 steps (measured
differences ~1e-15; the bound leaves room for growth through 60 steps of a non-convex loss).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import descend as ds

STEPS = 60


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def data():
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
        for _ in range(STEPS)
    ]


def loss_and_grads(model, params, x, y):
    params = {n: t.detach().requires_grad_() for n, t in params.items()}
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
        return torch.autograd.grad(loss, list(params.values()))


def test_sam_equals_the_papers_two_step_rule():
    rho, lr, mu = 0.05, 0.1, 0.9
    model = make_model()
    ours = ds.optim.create("sam", copy.deepcopy(model), lr=lr, momentum=mu, sam_rho=rho)
    net = ours.param_groups[0]["params"]
    names = [n for n, _ in model.named_parameters()]
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    buf = {n: torch.zeros_like(t) for n, t in w.items()}
    live = dict(zip(names, net, strict=True))
    twin = copy.deepcopy(model)
    passes = 0

    for x, y in data():
        # descend: the first pass, then step(closure) with the second
        def closure(x=x, y=y):
            nonlocal passes
            passes += 1
            loss = nn.functional.cross_entropy(torch.func.functional_call(twin, live, (x,)), y)
            loss.backward()
            return loss

        ours.zero_grad()
        closure()
        ours.step(closure)
        # the paper's rule, by hand
        g = loss_and_grads(twin, w, x, y)
        norm = math.sqrt(sum(float((t * t).sum()) for t in g))
        perturbed = {n: w[n] + rho * gi / (norm + 1e-12) for n, gi in zip(names, g, strict=True)}
        g_sam = loss_and_grads(twin, perturbed, x, y)
        for n, gi in zip(names, g_sam, strict=True):
            buf[n] = mu * buf[n] + gi
            w[n] = w[n] - lr * buf[n]
        for n in names:
            torch.testing.assert_close(live[n].detach(), w[n], rtol=1e-10, atol=1e-12)
    assert passes == 2 * STEPS  # exactly two forward-backward passes per step


@pytest.mark.parametrize("k, alpha", [(5, 0.5), (3, 0.8)])
def test_lookahead_equals_the_papers_rule(k, alpha):
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    model = make_model()
    twin = copy.deepcopy(model)
    ours = ds.optim.create("lookahead", model, lr=lr, lookahead_k=k, lookahead_alpha=alpha)
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in twin.named_parameters()}
    slow = {n: t.clone() for n, t in theta.items()}
    m = {n: torch.zeros_like(t) for n, t in theta.items()}
    v = {n: torch.zeros_like(t) for n, t in theta.items()}
    for t, (x, y) in enumerate(data(), start=1):
        ours.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        ours.step()
        for n, g in zip(names, loss_and_grads(twin, theta, x, y), strict=True):  # Adam (Kingma & Ba, Alg. 1)
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            theta[n] = theta[n] - lr * (m[n] / (1 - b1**t)) / ((v[n] / (1 - b2**t)).sqrt() + eps)
        if t % k == 0:  # k steps forward, one step back
            for n in names:
                slow[n] = slow[n] + alpha * (theta[n] - slow[n])
                theta[n] = slow[n].clone()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), theta[n], rtol=1e-10, atol=1e-12)


def test_wrappers_compose_and_keep_the_base_class_and_state():
    model = make_model()
    opt = ds.optim.create("adamw", model, sam_rho=0.05, lookahead_k=4)
    assert isinstance(opt, torch.optim.AdamW) and type(opt).__name__ == "Lookahead<SAM<AdamW>>"
    assert opt.needs_closure and opt.closure_backward
    x, y = data()[0]

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(4):
        opt.zero_grad()
        closure()
        opt.step(closure)
    state = opt.state_dict()
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "lookahead_slow"}
    assert state["param_groups"][0]["lookahead_step"] == 4 and state["param_groups"][0]["sam_rho"] == 0.05


def test_sam_without_a_closure_is_one_clear_error():
    model = make_model()
    opt = ds.optim.create("sam", model)
    x, y = data()[0]
    nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ds.UserError, match="closure"):
        opt.step()


def test_lookahead_is_refused_around_schedule_free_and_newton_around_sam():
    with pytest.raises(ds.UserError, match="unknown option 'lookahead_k'"):
        ds.optim.create("schedule_free_sgd", lookahead_k=5)
    with pytest.raises(ds.UserError, match="unknown option 'sam_rho'"):
        ds.optim.create("newton", sam_rho=0.05)
