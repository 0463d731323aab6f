"""D-Adaptation SGD (Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by D-Adaptation"): dual averaging
whose step size is a lower bound on the distance D = ‖w₀ − w*‖ estimated while it trains; ``lr`` is a multiplier.

Per step k, with g₀ the first gradient, η the multiplier and the estimate d_k (from d₀ = 1e-6, never decreasing):

    λ_k = d_k·η / ‖g₀‖
    r  ← r + λ_k·⟨g, s⟩;   s ← s + λ_k·g          (s: the weighted sum of gradients; r summed over all parameters)
    d̂ = 2r / ‖s‖,   d_{k+1} = max(d_k, min(d̂, growth·d_k))
    z = w₀ − s;   w ← β·w + (1 − β)·z             (β = ``momentum``: the primal average; 0 is plain dual averaging)

Weight decay adds λ·w to the gradient (L2, as the authors'). The update is the authors' code
(``dadaptation.DAdaptSGD``) operation for operation, equal to it in float64 (tested). Memory: three tensors per
parameter (w₀, s, z). The estimated step size d·η/‖g₀‖ is logged as ``d_lr``. Reads a few numbers per parameter
per step from the device, as the authors' code does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.errors import UserError


class DAdaptSGD(torch.optim.Optimizer):
    """D-Adaptation SGD, as in the module docstring. ``growth_rate=None`` means no limit on d's growth."""

    state_per_parameter = 3
    learning_rate_free = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        d0: float = 1e-6,
        growth_rate: float | None = None,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            k=0,
            numerator_weighted=0.0,
            d=d0,
            growth_rate=growth_rate,
            g0_norm=0.0,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        first = self.param_groups[0]
        lr = max(g["lr"] for g in self.param_groups)
        decay, ck, k = first["weight_decay"], 1 - first["momentum"], first["k"]
        numerator, d = first["numerator_weighted"], first["d"]
        growth = first["growth_rate"] if first["growth_rate"] is not None else math.inf
        for group in self.param_groups:  # the state first: a checkpoint of a run stopped before ‖g₀‖ > 0 has it
            for p in group["params"]:
                if p.grad is not None and "z" not in self.state[p]:
                    state = self.state[p]
                    state["z"], state["s"], state["x0"] = p.detach().clone(), torch.zeros_like(p), p.detach().clone()
        if k == 0:  # ‖g₀‖ (the authors' code leaves weight decay out of it)
            g_sq = sum(
                (p.grad * p.grad).sum().item()
                for g in self.param_groups
                if g["lr"] > 0
                for p in g["params"]
                if p.grad is not None
            )
            first["g0_norm"] = math.sqrt(g_sq)
        g0_norm = first["g0_norm"]
        if g0_norm == 0:
            return loss
        dlr = d * lr / g0_norm
        sk_sq = 0.0
        for group in self.param_groups:
            if group["lr"] not in (lr, 0.0):
                raise UserError("dadapt_sgd: parameter groups may differ in lr only by having lr = 0")
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                grad = p.grad.add(p, alpha=decay) if decay != 0 else p.grad
                if group["lr"] > 0.0:
                    numerator += dlr * torch.dot(grad.flatten(), state["s"].flatten()).item()
                    state["s"].add_(grad, alpha=dlr)
                    sk_sq += (state["s"] * state["s"]).sum().item()
        if sk_sq == 0:
            return loss
        if lr > 0.0:
            d_hat = 2 * numerator / math.sqrt(sk_sq)
            d = max(d, min(d_hat, d * growth))
        for group in self.param_groups:
            group.update(numerator_weighted=numerator, d=d, g0_norm=g0_norm)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["z"].copy_(state["x0"] - state["s"])
                p.mul_(1 - ck).add_(state["z"], alpha=ck)
            group["k"] = k + 1
        return loss

    def logs(self) -> dict[str, float]:
        """The step size the method uses: d·η/‖g₀‖."""
        group = self.param_groups[0]
        return {"d_lr": group["d"] * group["lr"] / group["g0_norm"] if group["g0_norm"] else 0.0}
