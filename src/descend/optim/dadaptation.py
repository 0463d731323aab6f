"""D-Adaptation SGD (Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by D-Adaptation"): dual averaging
whose step size is a lower bound on the distance D = ‖w₀ − w*‖ estimated while it trains; ``lr`` is a multiplier.

Per step k, with g₀ the first gradient, η the multiplier and the estimate d_k (from d₀ = 1e-6, never decreasing):

    λ_k = d_k·η / ‖g₀‖
    r  ← r + λ_k·⟨g, s⟩;   s ← s + λ_k·g          (s: the weighted sum of gradients; r summed over all parameters)
    d̂ = 2r / ‖s‖,   d_{k+1} = max(d_k, min(d̂, growth·d_k))
    z = w₀ − s;   w ← β·w + (1 − β)·z             (β = ``momentum``: the primal average; 0 is plain dual averaging)

Weight decay adds λ·w to the gradient (L2, as the authors'). The update is the authors' code
(``dadaptation.DAdaptSGD``), equal to it in float64 (tested). Memory: three tensors per parameter (w₀, s, z). The
estimated step size d·η/‖g₀‖ is logged as ``d_lr``.

On a GPU a step reads nothing back from the device: d, r, ‖g₀‖ and k are 0-dim tensors on the parameters' device
(:mod:`descend.optim.estimates`; numbers in ``state_dict()``), the sums are computed there, and the authors' early
returns (‖g₀‖ = 0 or ‖s‖ = 0: no gradient yet) are a ``torch.where`` that keeps the estimates and moves no weight.
Whether a step is the first is known on the device only, so ‖g‖² is summed at every step (one norm kernel) and
kept as ‖g₀‖ at the first. The elementwise updates run as torch's foreach kernels (one launch per device and dtype
on a GPU). On the CPU the step is the authors' code, reading its sums back as numbers (see
:mod:`descend.optim.estimates`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.optim.estimates import EstimatingOptimizer, by_kind, coefficient, into, total


class DAdaptSGD(EstimatingOptimizer):
    """D-Adaptation SGD, as in the module docstring. ``growth_rate=None`` means no limit on d's growth."""

    estimates = ("d", "numerator_weighted", "g0_norm", "k")

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
        loss, lr = self.begin_step(closure, "dadapt_sgd")
        if not self.on_device():
            return self._step_on_host(lr, loss)
        kinds = [(group, ps) for group in self.param_groups for ps in by_kind(group["params"])]
        for _, ps in kinds:  # the state first: a checkpoint of a run stopped before ‖g₀‖ > 0 has it
            for p in ps:
                if "z" not in self.state[p]:
                    self.state[p].update(z=p.detach().clone(), s=torch.zeros_like(p), x0=p.detach().clone())
        trained = [(group, ps) for group, ps in kinds if group["lr"] > 0.0]
        if not trained:  # ‖g₀‖ = 0 or ‖s‖ = 0: the authors' code returns here
            return loss
        first = self.param_groups[0]
        e = self.estimates_on(trained[0][1][0].device)
        decay, ck, d, k = first["weight_decay"], 1 - first["momentum"], e["d"], e["k"]
        # ‖g₀‖ at the first step (the authors' code leaves weight decay out of it); computed at every step, since
        # whether this is the first one is known on the device only
        g_sq = sum(_squared_norm([p.grad for p in ps], d) for _, ps in trained)
        g0_norm = torch.where(k == 0, g_sq.sqrt(), e["g0_norm"])
        dlr = torch.where(g0_norm > 0, d * lr / g0_norm, 0.0)
        numerator, sk_sq, scratch = e["numerator_weighted"], [], {}  # scratch: one buffer per parameter
        for i, (group, ps) in enumerate(kinds):
            if group["lr"] == 0.0:
                continue
            grads, s, like = [p.grad for p in ps], [self.state[p]["s"] for p in ps], ps[0]
            if decay != 0:
                grads = torch._foreach_add(grads, ps, alpha=decay)
            numerator = numerator + dlr * total(
                [torch.dot(g.flatten(), x.flatten()) for g, x in zip(grads, s, strict=True)], d
            )
            if decay != 0:  # new tensors already: scaled in place
                torch._foreach_mul_(grads, coefficient(dlr, like))
            else:
                grads = torch._foreach_mul(grads, coefficient(dlr, like))
            torch._foreach_add_(s, grads)
            scratch[i] = grads
            sk_sq.append(_squared_norm(s, d))
        sk_sq = sum(sk_sq)
        d_hat = 2 * numerator / sk_sq.sqrt()
        if first["growth_rate"] is not None:  # Python's max(d, min(d̂, growth·d)), NaN included
            d_hat = torch.where(d * first["growth_rate"] < d_hat, d * first["growth_rate"], d_hat)
        skip = (g0_norm == 0) | (sk_sq == 0)  # the authors' code returns before changing d or a weight
        self.publish(
            dict(
                numerator_weighted=torch.where(skip, e["numerator_weighted"], numerator),
                d=torch.where(~skip & (d_hat > d), d_hat, d),
                g0_norm=g0_norm,
                k=torch.where(skip, k, k + 1),
            )
        )
        weight = torch.where(skip, 0.0, torch.full_like(d, ck))  # of z in the primal average; 0 in a skipped step
        for i, (_, ps) in enumerate(kinds):
            z, x0, s = ([self.state[p][key] for p in ps] for key in ("z", "x0", "s"))
            like = ps[0]
            torch._foreach_copy_(z, x0)
            torch._foreach_sub_(z, s)
            torch._foreach_mul_(ps, coefficient(1 - weight, like))
            buf = into(scratch.get(i), z)
            torch._foreach_mul_(buf, coefficient(weight, like))
            torch._foreach_add_(ps, buf)
        return loss

    def _step_on_host(self, lr: float, loss: Any) -> Any:
        """The step with the estimates as Python numbers and the sums read back: the authors' code, operation for
        operation (where a read costs less than the kernels that avoid it: the CPU)."""
        first, e = self.param_groups[0], self.as_numbers()
        decay, ck, k = first["weight_decay"], 1 - first["momentum"], e["k"]
        numerator, d = e["numerator_weighted"], e["d"]
        growth = first["growth_rate"] if first["growth_rate"] is not None else math.inf
        for group in self.param_groups:  # the state first: a checkpoint of a run stopped before ‖g₀‖ > 0 has it
            for p in group["params"]:
                if p.grad is not None and "z" not in self.state[p]:
                    self.state[p].update(z=p.detach().clone(), s=torch.zeros_like(p), x0=p.detach().clone())
        g0_norm = e["g0_norm"]
        if k == 0:  # ‖g₀‖ (the authors' code leaves weight decay out of it)
            trained = (p for g in self.param_groups if g["lr"] > 0 for p in g["params"] if p.grad is not None)
            g0_norm = math.sqrt(sum((p.grad * p.grad).sum().item() for p in trained))
            self.publish(dict(g0_norm=g0_norm))
        if g0_norm == 0:
            return loss
        dlr = d * lr / g0_norm
        sk_sq = 0.0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or group["lr"] == 0.0:
                    continue
                state = self.state[p]
                grad = p.grad.add(p, alpha=decay) if decay != 0 else p.grad
                numerator += dlr * torch.dot(grad.flatten(), state["s"].flatten()).item()
                state["s"].add_(grad, alpha=dlr)
                sk_sq += (state["s"] * state["s"]).sum().item()
        if sk_sq == 0:
            return loss
        if lr > 0.0:
            d = max(d, min(2 * numerator / math.sqrt(sk_sq), d * growth))
        self.publish(dict(numerator_weighted=numerator, d=d, k=k + 1))
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["z"].copy_(state["x0"] - state["s"])
                p.mul_(1 - ck).add_(state["z"], alpha=ck)
        return loss

    def logs(self) -> dict[str, float]:
        """The step size the method uses: d·η/‖g₀‖; reads d and ‖g₀‖ from the device."""
        g0_norm = self.number("g0_norm")
        return {"d_lr": self.number("d") * self.param_groups[0]["lr"] / g0_norm if g0_norm else 0.0}


def _squared_norm(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Σ‖t‖₂² over ``tensors`` (one foreach launch for the norms), in ``like``'s dtype and device."""
    return torch.stack(torch._foreach_norm(tensors, 2)).to(device=like.device, dtype=like.dtype).square().sum()
