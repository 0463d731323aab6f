"""Prodigy (Mishchenko & Defazio 2024, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"): Adam whose
step size is estimated while it trains, so ``lr`` is a multiplier (1.0) rather than a value to tune.

Per step k, with the estimate d_k (from d₀ = 1e-6, never decreasing), η the multiplier and w₀ the initial weights:

    m ← β1·m + d_k(1 − β1)·g            v ← β2·v + d_k²(1 − β2)·g²
    r ← β3·r + (d_k/d₀)·d_k·η·⟨g, w₀ − w⟩ (summed over all parameters)
    s ← β3·s + (d_k/d₀)·d_k·η·g          d̂ = d_coef · r / ‖s‖₁,   d_{k+1} = max(d_k, min(d̂, growth·d_k))
    w ← w − d_k·η·m / (√v + d_k·ε)       (decoupled decay: w ← w − d_k·η·λ·w first)

β3 = √β2 by default; with ``bias_correction`` d_k·η is multiplied by √(1 − β2^(k+1)) / (1 − β1^(k+1)). The
estimated step size d·η is what the trainer logs as ``d_lr`` next to ``lr``. The update is the authors' code
(``prodigyopt.Prodigy``, ``slice_p=1``) operation for operation, equal to it in float64 (tested), with s and w₀
kept in each parameter's shape. Memory: four tensors per parameter (w₀, s, m, v).

Reads one number per parameter per step from the device (⟨g, w₀ − w⟩ and ‖s‖₁), as the authors' code does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.errors import UserError


class Prodigy(torch.optim.Optimizer):
    """Prodigy, as in the module docstring. ``growth_rate=None`` means no limit on d's growth."""

    state_per_parameter = 4
    learning_rate_free = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            beta3=beta3,
            eps=eps,
            weight_decay=weight_decay,
            d=d0,
            d0=d0,
            d_max=d0,
            d_numerator=0.0,
            d_denom=0.0,
            d_hat=d0,
            d_coef=d_coef,
            k=0,
            growth_rate=growth_rate,
            bias_correction=bias_correction,
            decouple=decouple,
            safeguard_warmup=safeguard_warmup,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        first = self.param_groups[0]
        beta1, beta2, k, d, d_max = first["beta1"], first["beta2"], first["k"], first["d"], first["d_max"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        lr = max(g["lr"] for g in self.param_groups)
        correction = (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1)) if first["bias_correction"] else 1
        dlr = d * lr * correction
        growth = first["growth_rate"] if first["growth_rate"] is not None else math.inf
        d_numerator, delta_numerator, d_denom = first["d_numerator"] * beta3, 0.0, 0.0
        for group in self.param_groups:
            if group["lr"] not in (lr, 0.0):
                raise UserError("prodigy: parameter groups may differ in lr only by having lr = 0")
            decay, d0 = group["weight_decay"], group["d0"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if decay != 0 and not group["decouple"]:
                    grad = grad.add(p, alpha=decay)
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                    state["s"] = torch.zeros_like(p)
                    state["p0"] = p.detach().clone()
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                if group["lr"] > 0.0:
                    delta_numerator += (d / d0) * dlr * torch.dot(grad.flatten(), (state["p0"] - p).flatten()).item()
                    state["exp_avg"].mul_(beta1).add_(grad, alpha=d * (1 - beta1))
                    state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=d * d * (1 - beta2))
                    scale = (d / d0) * (d if group["safeguard_warmup"] else dlr)
                    state["s"].mul_(beta3).add_(grad, alpha=scale)
                    d_denom += state["s"].abs().sum().item()
        if d_denom == 0:
            return loss
        d_hat = d
        global_numerator = d_numerator + delta_numerator
        if lr > 0.0:
            d_hat = first["d_coef"] * global_numerator / d_denom
            if d == first["d0"]:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * growth)
        for group in self.param_groups:
            group.update(d_numerator=global_numerator, d_denom=d_denom, d=d, d_max=d_max, d_hat=d_hat)
            decay, eps = group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                denom = state["exp_avg_sq"].sqrt().add_(d * eps)
                if decay != 0 and group["decouple"]:
                    p.add_(p, alpha=-decay * dlr)
                p.addcdiv_(state["exp_avg"], denom, value=-dlr)
            group["k"] = k + 1
        return loss

    def logs(self) -> dict[str, float]:
        """The step size the method uses: d·η (what a tuned Adam's lr would be)."""
        group = self.param_groups[0]
        return {"d_lr": group["d"] * group["lr"]}
