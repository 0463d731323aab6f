"""Labs ``regularization`` (L1 sparsity vs L2 grouping, ridge = gradient descent) and ``weight-decay``."""

from __future__ import annotations

import numpy as np
import torch

from descend import models, optim, regularization
from descend.data import synthetic
from descend.lab.base import LabResult
from descend.report import html
from descend.train import Trainer


def correlated(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four near-copies of one latent feature z (x_i = z + 0.05·ε_i) and four independent noise features;
    y = 2z + N(0, 0.1²): any split of weight over the four copies predicts equally well (the x = [1, 1, 1, 1]
    case in the data)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 1))
    x = np.hstack([z + 0.05 * rng.normal(size=(n, 4)), rng.normal(size=(n, 4))])
    return x, 2 * z + 0.1 * rng.normal(size=(n, 1))


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """w = (XᵀX + λI)⁻¹Xᵀy: the minimiser of ½‖y − Xw‖² + ½λ‖w‖² (Hoerl & Kennard 1970)."""
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)[:, 0]


def gradient_descent(x: np.ndarray, y: np.ndarray, regularizer, *, lr: float, steps: int) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """A bias-free linear model trained by full-batch gradient descent (descend's ``gd``) on the mean squared
    error plus ``regularizer``'s penalty (or its proximal step); returns the final weights and every step's."""
    xt, yt = torch.tensor(x), torch.tensor(y)
    model = torch.nn.Linear(x.shape[1], 1, bias=False).double()
    torch.nn.init.zeros_(model.weight)
    opt = optim.create("gd", model, lr=lr)
    path = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        (((model(xt) - yt) ** 2).mean() + regularizer.penalty(model)).backward()
        opt.step()
        regularizer.after_step(model, lr)
        path.append(model.weight.detach()[0].clone())
    return model.weight.detach().numpy()[0].copy(), torch.stack(path).numpy()


def regularization_lab(quick: bool = False) -> LabResult:
    from sklearn.linear_model import lasso_path

    x, y = correlated()
    n = len(x)
    steps, strength = (1000 if quick else 3000), 0.5
    # mean squared error + (s/2)‖w‖²  ⇔  ½‖y − Xw‖² + ½(n·s/2)‖w‖²: the closed form with λ = n·s/2
    w_l2, path = gradient_descent(x, y, regularization.create("l2", strength=strength), lr=0.2, steps=steps)
    w_closed = ridge(x, y, n * strength / 2)
    w_l1, _ = gradient_descent(x, y, regularization.create("proximal_l1", strength=strength), lr=0.2, steps=steps)
    gap = float(np.abs(w_l2 - w_closed).max())
    zeros = {"l1": int((w_l1 == 0).sum()), "l2": int((w_l2 == 0).sum())}
    spread = {k: float(np.std(w[:4]) / max(abs(np.mean(w[:4])), 1e-12)) for k, w in (("l1", w_l1), ("l2", w_l2))}
    # the x = [1, 1, 1, 1] case: same prediction, different penalties
    sparse, spread_w = np.array([1.0, 0, 0, 0]), np.full(4, 0.25)
    case = [["w₁ = [1, 0, 0, 0]", float(sparse.sum()), float(np.abs(sparse).sum()), float((sparse ** 2).sum())],
            ["w₂ = [¼, ¼, ¼, ¼]", float(spread_w.sum()), float(np.abs(spread_w).sum()), float((spread_w ** 2).sum())]]
    lams = np.logspace(-3, 2, 30 if quick else 60)
    ridge_path = np.array([ridge(x, y, n * s / 2) for s in lams])
    # scikit-learn's lasso: (1/2n)‖y − Xw‖² + α‖w‖₁, so α = s/2 for the mean squared error + s‖w‖₁
    alphas, lasso_coefs, _ = lasso_path(x, y[:, 0], alphas=lams[::-1] / 2)
    measured = {"strength": strength, "steps": steps, "ridge_closed_form": w_closed, "ridge_gradient_descent": w_l2,
                "max_abs_difference": gap, "l1_weights": w_l1, "l2_weights": w_l2, "exact_zeros": zeros,
                "correlated_spread": spread}
    fig_w, ax = html.figure(6.0, 3.2)
    index = np.arange(8)
    ax.bar(index - 0.2, w_l1, 0.4, label="L1 (proximal gradient)")
    ax.bar(index + 0.2, w_l2, 0.4, label="L2 (gradient descent)")
    ax.set_xticks(index, [f"copy {i + 1}" for i in range(4)] + [f"noise {i + 1}" for i in range(4)], fontsize=7)
    ax.set(ylabel="weight")
    ax.legend(fontsize=8)
    fig_p, (a1, a2) = html.figure(9.0, 3.4, ncols=2)
    for i in range(8):
        style = "-" if i < 4 else ":"
        a1.semilogx(lams, ridge_path[:, i], style)
        a2.semilogx(alphas * 2, lasso_coefs[i], style)
    a1.set(title="L2 (ridge, closed form)", xlabel="strength s", ylabel="weight")
    a2.set(title="L1 (lasso path)", xlabel="strength s")
    fig_c, ax = html.figure(5.5, 3.2)
    ax.semilogy(np.arange(1, steps + 1), np.maximum(np.linalg.norm(path - w_closed, axis=1), 1e-17))
    ax.set(xlabel="gradient-descent step", ylabel="‖w_t − w_closed‖ (floor 1e-17)",
           title="gradient descent on the L2 objective")
    return LabResult(
        "regularization", "L1 vs L2 regularization",
        "An L2 penalty (ridge regression, Hoerl & Kennard 1970; Tikhonov regularization) shrinks all weights and "
        "spreads weight evenly over correlated features (grouping); an L1 penalty (the lasso, Tibshirani 1996) "
        "sets many weights exactly to zero and keeps few features (sparsity). For x = [1, 1, 1, 1], the weights "
        "[1, 0, 0, 0] and [¼, ¼, ¼, ¼] predict the same, but L2 prefers the spread one while L1 cannot tell them "
        "apart. Ridge regression has a closed form, w = (XᵀX + λI)⁻¹Xᵀy, that gradient descent on the "
        "penalised objective reaches.",
        measured, [("Weights on four correlated copies of one feature and four noise features", fig_w),
                   ("Coefficient paths (solid: the four copies, dotted: noise)", fig_p),
                   ("Gradient descent converging to the ridge solution", fig_c)],
        [("The x = [1, 1, 1, 1] case", ["weights", "wᵀx", "L1 penalty Σ|w|", "L2 penalty Σw²"], case),
         ("Ridge: closed form vs gradient descent", ["feature", "closed form", "gradient descent"],
          [[i + 1, a, b] for i, (a, b) in enumerate(zip(w_closed, w_l2))])],
        [f"With strength {strength}, L1 (proximal gradient) leaves {zeros['l1']} of 8 weights exactly zero, L2 "
         f"{zeros['l2']}; over the four correlated copies the weights' std/mean is {spread['l1']:.2f} for L1 and "
         f"{spread['l2']:.3f} for L2.",
         f"Gradient descent ({steps} steps) matches the ridge closed form to {gap:.2e} (largest weight difference)."])


def weight_decay_lab(quick: bool = False) -> LabResult:
    rng = np.random.default_rng(0)
    x, y = synthetic.linear_highdim(20, rng)
    x_test, y_test = synthetic.linear_highdim(100, np.random.default_rng(1))
    train, test = (torch.tensor(x).float(), torch.tensor(y).float()), (torch.tensor(x_test).float(),
                                                                        torch.tensor(y_test).float())
    epochs = 40 if quick else 100
    lams = [0.0, 1.0, 3.0, 10.0] if quick else [0.0, 0.3, 1.0, 3.0, 10.0, 30.0]

    def fit(name: str, lam: float, mode: str, lr: float):
        spec = optim.create(name, lr=lr, weight_decay=lam, weight_decay_mode=mode, implementation="composed")
        trainer = Trainer(models.mlp([], init="normal", init_std=1.0), loss="mse", optimizer=spec, device="cpu",
                          seed=0, deterministic=True)
        trainer.fit(train, test, epochs=epochs, batch_size=5)
        return trainer

    curves, rows = {}, []
    for lam in lams:
        t = fit("gd", lam, "l2", 0.003)
        curves[lam] = (t.history["train_loss"], t.history["val_loss"])
        rows.append([lam, t.history[-1]["train_loss"], t.history[-1]["val_loss"],
                     float(t.model[-1].weight.detach().norm())])
    pairs = {}
    for name, lr in (("gd", 0.003), ("adam", 0.01)):
        a, b = fit(name, 1.0, "l2", lr), fit(name, 1.0, "decoupled", lr)
        wa, wb = a.model[-1].weight.detach(), b.model[-1].weight.detach()
        pairs[name] = {"max_abs_weight_difference": float((wa - wb).abs().max()),
                       "weight_norm_l2": float(wa.norm()), "weight_norm_decoupled": float(wb.norm()),
                       "test_loss_l2": a.history[-1]["val_loss"], "test_loss_decoupled": b.history[-1]["val_loss"]}
    measured = {"epochs": epochs, "lambdas": lams, "train_loss": [r[1] for r in rows],
                "test_loss": [r[2] for r in rows], "weight_norm": [r[3] for r in rows], "l2_vs_decoupled": pairs}
    fig, (a1, a2) = html.figure(9.5, 3.4, ncols=2)
    for lam, (tr, te) in curves.items():
        a1.semilogy(range(1, len(tr) + 1), tr, label=f"λ = {lam:g}")
        a2.semilogy(range(1, len(te) + 1), te, label=f"λ = {lam:g}")
    a1.set(title="training loss")
    a2.set(title="test loss")
    html.epoch_axis(a1, a2)
    a2.legend(fontsize=7)
    fig_l, ax = html.figure(5.5, 3.4)
    ax.semilogy([str(v) for v in lams], measured["train_loss"], "o-", label="train")
    ax.semilogy([str(v) for v in lams], measured["test_loss"], "s-", label="test")
    ax.set(xlabel="weight decay λ", ylabel="final loss (MSE)")
    ax.legend()
    best = lams[int(np.argmin(measured["test_loss"]))]
    g, a = pairs["gd"], pairs["adam"]
    return LabResult(
        "weight-decay", "weight decay",
        "With d = 200 inputs and only 20 training samples, y = 0.05 + Σ 0.01·xᵢ + ε (ε ~ N(0, 0.01²)), a linear "
        "model fits the training set perfectly and the test set badly; weight decay, w ← (1 − ηλ)w − η∇J, closes "
        "the gap (Hanson & Pratt 1988; Krogh & Hertz 1991). For SGD an L2 penalty λ/2·‖w‖² and decoupled decay are "
        "the same update, but not for adaptive methods such as Adam, where the penalty's gradient is rescaled by "
        "the second-moment estimate; decoupling it gives AdamW (Loshchilov & Hutter 2019).",
        measured, [("Training and test loss per epoch (minibatch SGD, batch 5, lr 0.003)", fig),
                   ("Final losses against λ", fig_l)],
        [("Final losses", ["λ", "train loss", "test loss", "‖w‖"], rows),
         ("L2 penalty vs decoupled decay (λ = 1, same initialisation and batches)",
          ["optimizer", "max |w_L2 − w_decoupled|", "‖w‖ L2", "‖w‖ decoupled", "test loss L2", "test loss decoupled"],
          [[k, v["max_abs_weight_difference"], v["weight_norm_l2"], v["weight_norm_decoupled"], v["test_loss_l2"],
            v["test_loss_decoupled"]] for k, v in pairs.items()])],
        [f"Without decay the final train / test loss is {rows[0][1]:.3g} / {rows[0][2]:.3g}; the test loss is "
         f"lowest at λ = {best:g} ({min(measured['test_loss']):.3g}).",
         f"SGD: L2 and decoupled decay end {g['max_abs_weight_difference']:.1e} apart (the same update); Adam: "
         f"{a['max_abs_weight_difference']:.3g} apart, ‖w‖ {a['weight_norm_l2']:.3g} with L2 vs "
         f"{a['weight_norm_decoupled']:.3g} decoupled."])
