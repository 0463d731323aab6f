"""Every named optimizer and switch against a plain, separate implementation of its textbook pseudo-code.

The references below are written one tensor at a time from the papers' and textbooks' code and formulas (no
descend code): 50 steps on a random non-convex problem with fresh mini-batches each step, in float64. The learning rate
changes every step (a schedule writing group["lr"]) except where the reference itself assumes a constant one.
Tolerance 1e-10 relative: both sides do the same float64 arithmetic up to operation order (~1e-16 per step),
which 50 steps of this problem amplify by far less than 1e6.
"""

from __future__ import annotations

import math

import pytest
import torch

import descend.optim as O

STEPS = 50
D = torch.float64


def init_params() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=g, dtype=D), torch.randn(3, generator=g, dtype=D),
            torch.randn(3, 2, generator=g, dtype=D)]


def loss_at(ws: list[torch.Tensor], t: int) -> torch.Tensor:
    """A small tanh network's squared error on mini-batch t (the batch depends only on t)."""
    g = torch.Generator().manual_seed(1000 + t)
    x, y = torch.randn(8, 4, generator=g, dtype=D), torch.randn(8, 2, generator=g, dtype=D)
    return ((torch.tanh(x @ ws[0] + ws[1]) @ ws[2] - y) ** 2).mean()


def grad_at(ws: list[torch.Tensor], t: int) -> list[torch.Tensor]:
    ws = [w.detach().clone().requires_grad_(True) for w in ws]
    return list(torch.autograd.grad(loss_at(ws, t), ws))


def lr_at(lr: float, t: int, schedule: bool) -> float:
    return lr * (1.0 + 0.5 * math.sin(t)) if schedule else lr


def run_descend(name: str, lr: float, schedule: bool = True, steps: int = STEPS, **hyper):
    ws = [w.clone().requires_grad_(True) for w in init_params()]
    opt = O.create(name, ws, lr=lr, **hyper)
    for t in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr_at(lr, t, schedule)
        opt.zero_grad(set_to_none=True)
        loss_at(ws, t).backward()
        opt.step()
    return [w.detach() for w in ws]


def assert_close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-10) -> None:
    scale = max(x.abs().max().item() for x in b)
    err = max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))
    assert err <= tol * scale, f"max difference {err:.3e} (scale {scale:.3e})"
    assert all(torch.isfinite(x).all() for x in a)


# ---- the references: each takes (w, g, state, t, lr, h) for ONE tensor and returns the new w ---------------

def ref_gd(w, g, s, t, lr, h):                       # SGD: w -= learning_rate * dw
    return w - lr * g


def ref_heavy_ball(w, g, s, t, lr, h):                # Polyak 1964: v = rho*v + dw; w -= learning_rate*v
    s["v"] = h["momentum"] * s.get("v", 0) + g
    return w - lr * s["v"]


def ref_velocity(w, g, s, t, lr, h):                  # Sutskever 2013: v = rho*v - learning_rate*dw; w += v
    s["v"] = h["momentum"] * s.get("v", 0) - lr * g
    return w + s["v"]


def ref_ema(w, g, s, t, lr, h):                       # EMA momentum: v = βv + (1-β)g; w -= ηv
    s["v"] = h["momentum"] * s.get("v", 0) + (1 - h["momentum"]) * g
    return w - lr * s["v"]


def ref_adagrad(w, g, s, t, lr, h):                   # Duchi 2011: gs += dw*dw; w -= lr*dw/(√gs + eps)
    s["gs"] = s.get("gs", 0) + g * g
    if h.get("eps_placement") == "inside":            # ε inside the root: x -= α/√(v + ε) · g
        return w - lr * g / torch.sqrt(s["gs"] + h["eps"])
    return w - lr * g / (torch.sqrt(s["gs"]) + h["eps"])


def ref_rmsprop(w, g, s, t, lr, h):                   # Tieleman & Hinton: gs = decay*gs + (1-decay)*dw*dw
    s["gs"] = h["rho"] * s.get("gs", 0) + (1 - h["rho"]) * g * g
    inside = h.get("eps_placement") == "inside"
    den = torch.sqrt(s["gs"] + h["eps"]) if inside else torch.sqrt(s["gs"]) + h["eps"]
    if h.get("momentum", 0) > 0:                      # torch.optim.RMSprop docs: b = μb + g/(√v + ε); w -= ηb
        s["b"] = h["momentum"] * s.get("b", 0) + g / den
        return w - lr * s["b"]
    return w - lr * g / den


def ref_adadelta(w, g, s, t, lr, h):                  # Zeiler 2012, Algorithm 1 (lr multiplies Δx, as torch)
    rho, eps = h["rho"], h["eps"]
    s["eg2"] = rho * s.get("eg2", 0) + (1 - rho) * g * g
    dx = torch.sqrt(s.get("edx2", torch.zeros_like(w)) + eps) / torch.sqrt(s["eg2"] + eps) * g
    s["edx2"] = rho * s.get("edx2", 0) + (1 - rho) * dx * dx
    return w - lr * dx


def ref_adam(w, g, s, t, lr, h):
    """Kingma & Ba 2015, Algorithm 1 (bias_correction), or the same without the bias correction."""
    b1, b2 = h["beta1"], h["beta2"]
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    m, v = s["m"], s["v"]
    if h.get("bias_correction", True):
        m, v = m / (1 - b1**t), v / (1 - b2**t)
    if h.get("eps_placement") == "inside":            # ε inside the root: α μ / √(v + ε)
        return w - lr * m / torch.sqrt(v + h["eps"])
    return w - lr * m / (torch.sqrt(v) + h["eps"])


def ref_nadam(w, g, s, t, lr, h):
    """NAdam (Dozat 2016) as torch.optim.NAdam's documentation writes it; without momentum_decay the
    constant μ_t = β1 (Adam + Nesterov, Dozat's simplified form)."""
    b1, b2, psi = h["beta1"], h["beta2"], h.get("momentum_decay")
    mu = b1 if psi is None else b1 * (1 - 0.5 * 0.96 ** (t * psi))
    mu_next = b1 if psi is None else b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
    s["prod"] = s.get("prod", 1.0) * mu
    s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
    if h.get("bias_correction", True):
        mhat = mu_next * s["m"] / (1 - s["prod"] * mu_next) + (1 - mu) * g / (1 - s["prod"])
        vhat = s["v"] / (1 - b2**t)
    else:
        mhat, vhat = mu_next * s["m"] + (1 - mu) * g, s["v"]
    return w - lr * mhat / (torch.sqrt(vhat) + h["eps"])


def run_reference(step, lr: float, h: dict, schedule: bool = True, decay: str | None = None, wd: float = 0.0):
    """Run ``step`` on each tensor; weight decay as L2 in g, or decoupled on w."""
    ws, states = init_params(), [{} for _ in range(3)]
    for t in range(1, STEPS + 1):
        eta = lr_at(lr, t, schedule)
        grads = grad_at(ws, t)
        new = []
        for w, g, s in zip(ws, grads, states, strict=True):
            if decay == "l2":                          # g_t = ∇L_data + λw  (L2 regularization)
                new.append(step(w, g + wd * w, s, t, eta, h))
            elif decay == "decoupled":                 # w ← w − η(s_t + λw)  (decoupled weight decay)
                new.append(step(w, g, s, t, eta, h) - eta * wd * w)
            else:
                new.append(step(w, g, s, t, eta, h))
        ws = new
    return ws


CASES = [  # (name, options, reference, lr, reference hyper-parameters)
    ("gd", {}, ref_gd, 0.1, {}),
    ("sgd", {}, ref_gd, 0.1, {}),
    ("momentum", {"momentum": 0.9}, ref_heavy_ball, 0.02, {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "momentum_form": "velocity"}, ref_velocity, 0.02, {"momentum": 0.8}),
    ("momentum", {"momentum": 0.9, "momentum_form": "ema"}, ref_ema, 0.1, {"momentum": 0.9}),
    ("adagrad", {"eps": 1e-7}, ref_adagrad, 0.1, {"eps": 1e-7}),
    ("adagrad", {"eps": 1e-7, "eps_placement": "inside"}, ref_adagrad, 0.1,
     {"eps": 1e-7, "eps_placement": "inside"}),
    ("rmsprop", {"rho": 0.9, "eps": 1e-7}, ref_rmsprop, 0.01, {"rho": 0.9, "eps": 1e-7}),
    ("rmsprop", {"rho": 0.9, "eps": 1e-7, "eps_placement": "inside"}, ref_rmsprop, 0.01,
     {"rho": 0.9, "eps": 1e-7, "eps_placement": "inside"}),
    ("rmsprop", {"rho": 0.9, "eps": 1e-7, "momentum": 0.5}, ref_rmsprop, 0.01,
     {"rho": 0.9, "eps": 1e-7, "momentum": 0.5}),
    ("adadelta", {}, ref_adadelta, 1.0, {"rho": 0.9, "eps": 1e-6}),
    ("adam", {}, ref_adam, 0.01, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    ("adam", {"bias_correction": False}, ref_adam, 0.01,
     {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "bias_correction": False}),
    ("adam", {"eps_placement": "inside"}, ref_adam, 0.01,
     {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "eps_placement": "inside"}),
    ("adam", {"nesterov": True}, ref_nadam, 0.01, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    ("adamw", {"weight_decay": 0.0}, ref_adam, 0.01, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    ("nadam", {}, ref_nadam, 0.01, {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 0.004}),
    ("nadam", {"bias_correction": False}, ref_nadam, 0.01,
     {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "momentum_decay": 0.004, "bias_correction": False}),
]


@pytest.mark.parametrize("impl", ["composed", "auto"])
@pytest.mark.parametrize(("name", "opts", "ref", "lr", "h"), CASES, ids=lambda v: str(v)[:40])
def test_matches_the_reference_pseudo_code(name, opts, ref, lr, h, impl):
    assert_close(run_descend(name, lr, implementation=impl, **opts), run_reference(ref, lr, h))


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
@pytest.mark.parametrize(("name", "opts", "ref", "lr", "h"), CASES[::2] + [CASES[3]],
                         ids=lambda v: str(v)[:40])
def test_weight_decay_modes_on_every_optimizer(name, opts, ref, lr, h, mode):
    # exclude_from_decay=[]: the reference decays every tensor (bare tensors have no names)
    got = run_descend(name, lr, weight_decay=0.05, weight_decay_mode=mode, exclude_from_decay=[], **opts)
    assert_close(got, run_reference(ref, lr, h, decay=mode, wd=0.05))


def lookahead_reference(form: str, lr: float, rho: float) -> list[torch.Tensor]:
    """Nesterov's method (Nesterov 1983): gradient at the look-ahead point x̃ = where the velocity alone would take us,
    then the ordinary momentum step. Reported are the look-ahead points x̃_t, the iterates an optimizer that
    only sees gradients at its own parameters produces (Sutskever et al. 2013)."""
    ws = init_params()
    vs = [torch.zeros_like(w) for w in ws]
    ahead = ws
    for t in range(1, STEPS + 1):
        grads = grad_at(ahead, t)
        if form == "heavy_ball":       # dw = grad(w − η·ρ·v); v = ρv + dw; w −= ηv
            vs = [rho * v + g for v, g in zip(vs, grads, strict=True)]
            ws = [w - lr * v for w, v in zip(ws, vs, strict=True)]
            ahead = [w - lr * rho * v for w, v in zip(ws, vs, strict=True)]
        elif form == "velocity":       # dw = grad(w + ρ·v); v = ρv − η·dw; w += v
            vs = [rho * v - lr * g for v, g in zip(vs, grads, strict=True)]
            ws = [w + v for w, v in zip(ws, vs, strict=True)]
            ahead = [w + rho * v for w, v in zip(ws, vs, strict=True)]
        else:                          # ema: dw = grad(w − η·β·v); v = βv + (1−β)dw; w −= ηv
            vs = [rho * v + (1 - rho) * g for v, g in zip(vs, grads, strict=True)]
            ws = [w - lr * v for w, v in zip(ws, vs, strict=True)]
            ahead = [w - lr * rho * v for w, v in zip(ws, vs, strict=True)]
    return ahead


@pytest.mark.parametrize("form", ["heavy_ball", "velocity", "ema"])
@pytest.mark.parametrize("impl", ["composed", "auto"])
def test_nesterov_is_the_look_ahead_method(form, impl):
    lr = 0.1 if form == "ema" else 0.02
    expected = lookahead_reference(form, lr, 0.9)
    for name, extra in [("nesterov", {}), ("momentum", {"nesterov": True})]:
        got = run_descend(name, lr, schedule=False, momentum=0.9, momentum_form=form, implementation=impl,
                          **extra)
        assert_close(got, expected)


def test_adamw_is_loshchilov_hutter_algorithm_2():
    """Loshchilov & Hutter 2019, Algorithm 2, with schedule multiplier η_t = 1 and step size α:
    θ ← θ − (α·m̂/(√v̂+ε) + λ'θ). descend (like torch) multiplies the decay by the learning rate:
    λ' = lr·weight_decay."""
    lr, wd = 0.01, 0.1
    got = run_descend("adamw", lr, schedule=False, weight_decay=wd, exclude_from_decay=[])
    h = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    ws, states = init_params(), [{} for _ in range(3)]
    for t in range(1, STEPS + 1):
        grads = grad_at(ws, t)
        ws = [ref_adam(w, g, s, t, lr, h) - (lr * wd) * w for w, g, s in zip(ws, grads, states, strict=True)]
    assert_close(got, ws)
