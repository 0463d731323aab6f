"""Penalties, parameter selection and proximal L1 against the textbook formulas."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from descend import regularization
from descend.errors import UserError

DT = torch.float64  # float64 throughout: formulas are compared to ~1e-12, far below float32's 1e-7


def _w(*values):
    return nn.Parameter(torch.tensor(values, dtype=DT))


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2)).to(DT)


def _grad(kind, w, **options):
    model = nn.Module()
    model.w = w
    reg = regularization.create(kind, **options)
    w.grad = None
    reg.penalty(model).backward()
    return w.grad


W = (0.5, -1.5, 2.0, -0.25, 3.0)


@pytest.mark.parametrize(
    "kind, options, formula",
    [
        # L1: ∂/∂w λΣ|w| = λ sgn(w)
        ("l1", {"strength": 0.3}, lambda w: 0.3 * w.sign()),
        # L2, half convention: ∂/∂w λ/2 Σw² = λw
        ("l2", {"strength": 0.3}, lambda w: 0.3 * w),
        # L2, full convention: ∂/∂w λΣw² = 2λw
        ("l2", {"strength": 0.3, "convention": "full"}, lambda w: 2 * 0.3 * w),
        # elastic net: λ₁ sgn(w) + 2λ₂ w
        ("elastic_net", {"l1_strength": 0.2, "l2_strength": 0.7}, lambda w: 0.2 * w.sign() + 2 * 0.7 * w),
        # Lp: ∂/∂w λΣ|w|ᵖ = λ p |w|ᵖ⁻¹ sgn(w)
        ("lp", {"strength": 0.3, "p": 3.0}, lambda w: 0.3 * 3.0 * w.abs() ** 2 * w.sign()),
        ("lp", {"strength": 0.3, "p": 1.5}, lambda w: 0.3 * 1.5 * w.abs() ** 0.5 * w.sign()),
    ],
)
def test_penalty_gradient_is_the_textbook_formula(kind, options, formula):
    w = _w(*W)
    torch.testing.assert_close(_grad(kind, w, **options), formula(w.detach()), rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind, options, value", [
    ("l1", {"strength": 0.3}, 0.3 * 7.25),
    ("l2", {"strength": 0.3}, 0.3 / 2 * 15.5625),
    ("l2", {"strength": 0.3, "convention": "full"}, 0.3 * 15.5625),
    ("elastic_net", {"l1_strength": 0.2, "l2_strength": 0.7}, 0.2 * 7.25 + 0.7 * 15.5625),
    ("lp", {"strength": 0.3, "p": 2.0}, 0.3 * 15.5625),
])
def test_penalty_value(kind, options, value):
    # Σ|w| = 7.25 and Σw² = 15.5625 for W
    model = nn.Module()
    model.w = _w(*W)
    out = regularization.create(kind, **options).penalty(model)
    assert out.dim() == 0
    assert out.item() == pytest.approx(value, rel=1e-12)


def test_lp_below_one_warns_non_convex_and_has_finite_gradient_at_zero():
    with pytest.warns(UserWarning, match="non-convex"):
        regularization.create("lp", strength=1.0, p=0.5)
    w = _w(0.0, 4.0, -1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grad = _grad("lp", w, strength=1.0, p=0.5)
    # 0 at w = 0 (a subgradient), p|w|^(p−1)sgn(w) elsewhere: 0.5/2 = 0.25 and −0.5
    torch.testing.assert_close(grad, torch.tensor([0.0, 0.25, -0.5], dtype=DT), rtol=1e-12, atol=0)


def test_default_selection_excludes_biases_and_normalisation_parameters():
    reg = regularization.create("l2")
    model = _model()
    assert [name for _, name, _ in reg.selected(model)] == ["0.weight", "3.weight"]
    assert reg.selected(model) is reg.selected(model)  # cached per model
    layer_norm, group_norm = nn.LayerNorm(3), nn.GroupNorm(1, 3)
    assert not reg.selects("weight", layer_norm.weight, layer_norm)
    assert not reg.selects("weight", group_norm.weight, group_norm)
    # only the selected weights enter the penalty: λ/2 (‖W₀‖² + ‖W₃‖²)
    expected = 1e-4 / 2 * (model[0].weight.square().sum() + model[3].weight.square().sum())
    torch.testing.assert_close(reg.penalty(model), expected, rtol=1e-12, atol=0)


def test_include_and_exclude_patterns():
    model = _model()
    names = lambda reg: [name for _, name, _ in reg.selected(model)]  # noqa: E731
    assert names(regularization.create("l1", include=["*"])) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    assert names(regularization.create("l1", include=["*"], exclude=["1.*"])) == [
        "0.weight", "0.bias", "3.weight", "3.bias"]
    assert names(regularization.create("l1", exclude=["3.*"])) == ["0.weight"]
    assert names(regularization.create("l1", include="3.weight")) == ["3.weight"]


def test_l2_with_sgd_is_weight_decay():
    """SGD on J + λ/2‖w‖² is w ← (1 − ηλ)w − η∇J: torch's SGD(weight_decay=λ)."""
    lr, lam = 0.1, 0.05
    x, y = torch.randn(16, 4, dtype=DT), torch.randn(16, 2, dtype=DT)
    data_loss = lambda m: ((m(x) - y) ** 2).mean()  # noqa: E731
    models = [_model() for _ in range(3)]
    reg = regularization.create("l2", strength=lam)
    ours = torch.optim.SGD(models[0].parameters(), lr=lr)
    decay = [p for name, p in models[1].named_parameters() if name in ("0.weight", "3.weight")]
    rest = [p for name, p in models[1].named_parameters() if name not in ("0.weight", "3.weight")]
    torchs = torch.optim.SGD([{"params": decay, "weight_decay": lam}, {"params": rest}], lr=lr)
    for _ in range(5):
        ours.zero_grad()
        (data_loss(models[0]) + reg.penalty(models[0])).backward()
        ours.step()
        torchs.zero_grad()
        data_loss(models[1]).backward()
        torchs.step()
        # the textbook update, by hand
        models[2].zero_grad()
        data_loss(models[2]).backward()
        with torch.no_grad():
            for name, p in models[2].named_parameters():
                factor = 1 - lr * lam if name in ("0.weight", "3.weight") else 1.0
                p.copy_(factor * p - lr * p.grad)
    for a, b, c in zip(*(m.parameters() for m in models), strict=True):
        # same operations in a different order: agree to a few float64 ulps
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)


def test_proximal_l1_step_is_soft_thresholding():
    model = nn.Module()
    model.w = _w(0.5, -0.05, 0.1, -2.0, 0.0, 0.02)
    reg = regularization.create("proximal_l1", strength=0.5)
    assert reg.penalty(model).item() == 0.0
    before = model.w.detach().clone()
    reg.after_step(model, lr=0.2)  # threshold ηλ = 0.1
    expected = before.sign() * (before.abs() - 0.1).clamp_min(0)  # w ← sgn(w)·max(|w| − ηλ, 0)
    torch.testing.assert_close(model.w.detach(), expected, rtol=0, atol=1e-15)
    assert (model.w.detach() == 0).tolist() == [False, True, True, False, True, True]  # exact zeros
    assert reg.sparsity(model) == {"": pytest.approx(4 / 6)}


def test_frozen_parameters_are_left_alone_until_unfrozen():
    model = _model()
    model[0].weight.requires_grad_(False)
    reg = regularization.create("proximal_l1", strength=100.0)
    frozen = model[0].weight.detach().clone()
    reg.after_step(model, lr=1.0)
    assert torch.equal(model[0].weight, frozen) and (model[3].weight == 0).all()
    model[0].weight.requires_grad_(True)  # unfreezing (fine-tuning) takes effect despite the cache
    reg.after_step(model, lr=1.0)
    assert (model[0].weight == 0).all()
    assert reg.sparsity(model) == {"0": 1.0, "3": 1.0}


def test_penalties_do_nothing_after_the_step():
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    regularization.create("l1", strength=10.0).after_step(model, lr=1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def _fit(reg, w0, x, y, steps=2000, lr=0.1):
    model = nn.Linear(x.shape[1], 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(w0)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((model(x).squeeze(-1) - y) ** 2).mean() + reg.penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reg.after_step(model, lr)
    return model


def test_correlated_features_l2_spreads_l1_is_sparse():
    """x = [1,1,1,1]; w₁ = [1,0,0,0] and w₂ = [0.25]*4 predict the same, L2 prefers w₂.

    Every w with the same Σw has the same data loss (w·x − 1)². L2 (λ/2‖w‖²) has the unique minimum
    a·[1,1,1,1], a = 2/(8 + λ) (≈ 0.25). L1 cannot tell w₁ from w₂ (both have ‖w‖₁ = 1): every w ≥ 0 with
    Σw = 1 − λ/2 is optimal, and proximal L1 stops on a face of that set, with exact zeros. Plain
    (sub)gradient L1 does not reach exact zeros: it oscillates around them.
    """
    x, y = torch.ones(1, 4, dtype=DT), torch.ones(1, dtype=DT)
    l2 = regularization.create("l2", strength=1.0)
    w1, w2 = nn.Linear(4, 1, bias=False), nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        w1.weight.copy_(torch.tensor([1.0, 0, 0, 0]))
        w2.weight.copy_(torch.tensor([0.25] * 4))
    assert l2.penalty(w2).item() < l2.penalty(w1).item()  # 0.125 < 0.5

    w0 = torch.tensor([0.7, 0.5, -0.3, 0.1], dtype=DT)
    lam = 0.1
    ridge = _fit(regularization.create("l2", strength=lam), w0, x, y).weight.detach()[0]
    # the gap between coordinates shrinks by (1 − ηλ) per step: (0.99)^2000 ≈ 2e-9
    torch.testing.assert_close(ridge, torch.full((4,), 2 / (8 + lam), dtype=DT), rtol=0, atol=1e-8)
    assert (ridge != 0).all()

    lasso_model = _fit(regularization.create("proximal_l1", strength=lam), w0, x, y)
    lasso = lasso_model.weight.detach()[0]
    assert (lasso == 0).sum() >= 2  # sparse: exact zeros
    assert lasso.sum().item() == pytest.approx(1 - lam / 2, abs=1e-9)  # optimum of (Σw − 1)² + λΣ|w|, w ≥ 0
    assert regularization.create("proximal_l1").sparsity(lasso_model) == {"": (lasso == 0).sum().item() / 4}

    subgradient = _fit(regularization.create("l1", strength=lam), w0, x, y).weight.detach()[0]
    assert (subgradient != 0).all()


def test_correlated_noisy_features_lasso_selects_ridge_groups():
    """L2 gives correlated features similar weights, L1 selects the informative one."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(256, generator=g, dtype=DT)
    x = 0.8 * z[:, None] + 0.5 * torch.randn(256, 4, generator=g, dtype=DT)
    x[:, 0] = z  # y = z: feature 0 is exact, the others are correlated noisy copies
    ridge = _fit(regularization.create("l2", strength=0.1), torch.zeros(4), x, z).weight.detach()[0]
    lasso = _fit(regularization.create("proximal_l1", strength=0.1), torch.zeros(4), x, z).weight.detach()[0]
    assert (ridge[1:].abs() > 0.05).all()
    assert lasso[0] > 0.9 and (lasso[1:] == 0).all()


def test_create_errors():
    with pytest.raises(UserError, match="regularization: option 'name' must be one of "
                       "'l1', 'l2', 'elastic_net', 'lp', 'proximal_l1'; got 'l3'"):
        regularization.create("l3")
    with pytest.raises(UserError, match="regularization 'l2': unknown option 'p'; valid options: strength"):
        regularization.create("l2", p=2)
    with pytest.raises(UserError, match=r"regularization 'l1': option 'strength' must be a number >= 0; got -1"):
        regularization.create("l1", strength=-1)
    with pytest.raises(UserError, match=r"regularization 'lp': option 'p' must be a number > 0; got 0"):
        regularization.create("lp", p=0)
    with pytest.raises(UserError, match="regularization 'lp': option 'p' is required"):
        regularization.create("lp")
    with pytest.raises(UserError, match="option 'convention' must be one of 'half', 'full'; got 'third'"):
        regularization.create("l2", convention="third")
    with pytest.raises(UserError, match=r"option 'include' must be a list of parameter-name patterns .*; got \[1\]"):
        regularization.create("l2", include=[1])
    # None means "not set" so a config section can pass every field
    assert regularization.create("l2", strength=None, convention=None).l2 == pytest.approx(1e-4 / 2)
