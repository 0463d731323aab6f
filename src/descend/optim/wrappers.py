"""Optimizers around optimizers: sharpness-aware minimisation (SAM) and Lookahead, around any first-order one.

**SAM** (Foret, Kleiner, Mobahi & Neyshabur 2021, "Sharpness-Aware Minimization for Efficiently Improving
Generalization"), the paper's two-step rule: with g = ∇L(w) from the step's first forward-backward pass,

    ε = ρ·g/‖g‖₂                 (‖g‖₂ over all parameters together)
    g_SAM = ∇L(w + ε)            (a second forward-backward pass, at the perturbed weights)
    w ← base optimizer's step from w with the gradient g_SAM

so a step costs exactly two passes. It needs a closure that recomputes the loss *and* its gradient
(``closure_backward = True``): descend's Trainer passes one, runs it without updating batch-norm running
statistics a second time, and clips its gradient as it clipped the first.

**Lookahead** (Zhang, Lucas, Hinton & Ba 2019, "Lookahead Optimizer: k steps forward, 1 step back"): the base
optimizer's weights are the fast weights θ; slow weights φ start at the initial weights, and every k steps

    φ ← φ + α(θ − φ),   θ ← φ.

φ lives in the optimizer's state (``lookahead_slow``, one tensor per parameter) and the step count in the groups,
so both are in checkpoints and a run resumes exactly. Both wrappers make the optimizer an instance of a subclass
of its own class (``SAM<AdamW>``): the state dict, hyper-parameters and kernels stay the base optimizer's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import torch

from descend.errors import UserError


def sam(optimizer: torch.optim.Optimizer, rho: float) -> torch.optim.Optimizer:
    """Make ``optimizer`` take SAM steps with radius ``rho`` (group key ``sam_rho``; see the module docstring)."""
    if getattr(optimizer, "needs_closure", False):
        raise UserError(f"SAM goes around a first-order optimizer; {type(optimizer).__name__} takes a closure itself")
    optimizer.__class__ = _sam_class(type(optimizer))
    for group in optimizer.param_groups:
        group.setdefault("sam_rho", rho)
    optimizer.defaults.setdefault("sam_rho", rho)
    return optimizer


def lookahead(optimizer: torch.optim.Optimizer, k: int, alpha: float) -> torch.optim.Optimizer:
    """Make ``optimizer`` the fast optimizer of Lookahead with period ``k`` and slow step ``alpha``."""
    if getattr(optimizer, "schedule_free", False):
        raise UserError(
            "Lookahead cannot go around a schedule-free optimizer: it keeps its own average of the "
            "iterates; use one or the other"
        )
    optimizer.__class__ = _lookahead_class(type(optimizer))
    for group in optimizer.param_groups:
        group.setdefault("lookahead_k", k)
        group.setdefault("lookahead_alpha", alpha)
        group.setdefault("lookahead_step", 0)
    optimizer.defaults.update(lookahead_k=k, lookahead_alpha=alpha, lookahead_step=0)
    return optimizer


@cache
def _sam_class(base: type) -> type:
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if closure is None:
            raise UserError(
                "SAM needs opt.step(closure) with a closure that recomputes the loss and calls "
                "backward() (descend's Trainer passes one)"
            )
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return base.step(self)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
            perturbations = []
            for group in self.param_groups:
                scale = group["sam_rho"] / (norm + 1e-12)
                for p in group["params"]:
                    if p.grad is not None:
                        e = p.grad * scale.to(p.grad.dtype)
                        p.add_(e)
                        perturbations.append((p, e))
        self.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = closure()  # the second forward-backward pass, at w + ε
        with torch.no_grad():
            for p, e in perturbations:
                p.sub_(e)
        base.step(self)
        return loss

    return type(
        f"SAM<{base.__name__}>",
        (base,),
        {
            "step": step,
            "needs_closure": True,
            "closure_backward": True,
            "__module__": __name__,
            "__doc__": f"{base.__name__} with sharpness-aware steps (Foret et al. 2021); see descend.optim.wrappers.",
        },
    )


@cache
def _lookahead_class(base: type) -> type:
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        fresh = [
            (p, p.detach().clone())
            for g in self.param_groups
            for p in g["params"]
            if p.grad is not None and "lookahead_slow" not in self.state[p]
        ]
        loss = base.step(self, closure) if closure is not None else base.step(self)
        for p, start in fresh:  # φ₀ = θ₀ (after the base's step created its own state: torch's expects none)
            self.state[p]["lookahead_slow"] = start
        with torch.no_grad():
            for group in self.param_groups:
                group["lookahead_step"] += 1
                if group["lookahead_step"] % group["lookahead_k"]:
                    continue
                for p in group["params"]:
                    slow = self.state[p].get("lookahead_slow")
                    if slow is not None:
                        slow.add_(p - slow, alpha=group["lookahead_alpha"])
                        p.copy_(slow)
        return loss

    return type(
        f"Lookahead<{base.__name__}>",
        (base,),
        {
            "step": step,
            "__module__": __name__,
            "__doc__": f"{base.__name__} as the fast optimizer of Lookahead (Zhang et al. 2019)",
        },
    )
