"""Damped Newton's method: x ← x − α (∇²f(x))⁻¹ ∇f(x), for small models.

The Hessian of all parameters together is formed explicitly (n × n, n = number of parameters), so the method
is limited to models of a few thousand parameters; above ``max_params`` it refuses with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.errors import UserError


class Newton(torch.optim.Optimizer):
    """Damped Newton's method, x ← x − α·H̃⁻¹∇f with H̃ = Q·diag(max(|λ_i|, damping))·Qᵀ for H = QΛQᵀ.

    On a convex quadratic whose curvatures all exceed ``damping`` this is the exact Newton step (the minimum
    in one step with α = 1). For non-convex losses the absolute value turns saddle directions into descent
    directions and ``damping`` bounds the step along flat ones (the "saddle-free" damping of Dauphin et al.
    2014); α is ``group["lr"]`` and may follow a schedule.

    Weight decay: ``l2`` adds λ/2·‖w‖² to the loss (λw to the gradient, λ to the Hessian's diagonal) for the
    decayed groups; ``decoupled`` shrinks w ← (1 − αλ)w after the step.

    **Closure contract.** ``needs_closure = True``: call ``opt.step(closure)`` where ``closure()`` recomputes
    the loss of the current batch under ``torch.enable_grad()`` and returns it *without* calling
    ``backward()``; Newton differentiates it twice itself. Gradients in ``p.grad`` are ignored.
    """

    needs_closure = True

    def __init__(self, params: Iterable[Any], lr: float = 1.0, damping: float = 1e-4, max_params: int = 5000,
                 weight_decay: float = 0.0, weight_decay_mode: str = "l2"):
        super().__init__(params, dict(lr=lr, damping=damping, weight_decay=weight_decay))
        if weight_decay_mode not in ("l2", "decoupled"):
            raise UserError(f"newton option weight_decay_mode must be one of ['l2', 'decoupled'], "
                            f"got {weight_decay_mode!r}")
        self.weight_decay_mode = weight_decay_mode
        n = sum(p.numel() for g in self.param_groups for p in g["params"])
        if n > max_params:
            raise UserError(f"newton forms the full {n}×{n} Hessian: the model has {n} parameters but "
                            f"max_params is {max_params}; use a first-order optimizer (adam, momentum) or "
                            f"raise max_params if {n}² numbers fit in memory")

    def _params(self) -> list[tuple[torch.Tensor, dict[str, Any]]]:
        return [(p, g) for g in self.param_groups for p in g["params"] if p.requires_grad]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is None:
            raise UserError("newton needs opt.step(closure) with a closure returning the loss (no backward)")
        pairs = self._params()
        params = [p for p, _ in pairs]
        with torch.enable_grad():
            loss = closure()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            flat = torch.cat([g.reshape(-1) for g in grads])
            n = flat.numel()
            try:
                rows = torch.autograd.grad(flat, params, torch.eye(n, dtype=flat.dtype, device=flat.device),
                                           is_grads_batched=True, allow_unused=True)
                hess = torch.cat([_dense(r, p, n) for r, p in zip(rows, params, strict=True)], dim=1)
            except RuntimeError:  # an op without a batching rule: one row at a time
                rows = [torch.autograd.grad(flat[i], params, retain_graph=True, allow_unused=True)
                        for i in range(n)]
                hess = torch.stack([torch.cat([_dense(r, p, None) for r, p in zip(row, params, strict=True)])
                                    for row in rows])
        with torch.no_grad():
            g, h = flat.detach(), 0.5 * (hess + hess.T).detach()
            if self.weight_decay_mode == "l2":
                lam = torch.cat([torch.full((p.numel(),), float(grp["weight_decay"]), dtype=g.dtype,
                                            device=g.device) for p, grp in pairs])
                w = torch.cat([p.detach().reshape(-1) for p in params])
                g = g + lam * w
                h = h + torch.diag(lam)
            damping = self.param_groups[0]["damping"]
            evals, evecs = torch.linalg.eigh(h)
            direction = evecs @ ((evecs.T @ g) / evals.abs().clamp_min(damping))
            offset = 0
            for p, grp in pairs:
                k = p.numel()
                if self.weight_decay_mode == "decoupled" and grp["weight_decay"]:
                    p.mul_(1.0 - grp["lr"] * grp["weight_decay"])
                p.add_(direction[offset:offset + k].view_as(p), alpha=-grp["lr"])
                offset += k
        return loss


def _dense(row: torch.Tensor | None, p: torch.Tensor, batch: int | None) -> torch.Tensor:
    """A Hessian block as a dense matrix (zeros where the loss does not depend on ``p``)."""
    shape = (batch, p.numel()) if batch is not None else (p.numel(),)
    if row is None:
        return torch.zeros(shape, dtype=p.dtype, device=p.device)
    return row.reshape(shape)
