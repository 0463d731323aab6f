"""Prodigy (Mishchenko & Defazio 2024, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"): Adam whose
step size is estimated while it trains, so ``lr`` is a multiplier (1.0) rather than a value to tune.

Per step k, with the estimate d_k (from d₀ = 1e-6, never decreasing), η the multiplier and w₀ the initial weights:

    m ← β1·m + d_k(1 − β1)·g            v ← β2·v + d_k²(1 − β2)·g²
    r ← β3·r + (d_k/d₀)·d_k·η·⟨g, w₀ − w⟩ (summed over all parameters)
    s ← β3·s + (d_k/d₀)·d_k·η·g          d̂ = d_coef · r / ‖s‖₁,   d_{k+1} = max(d_k, min(d̂, growth·d_k))
    w ← w − d_k·η·m / (√v + d_{k+1}·ε)   (decoupled decay: w ← w − d_k·η·λ·w first)

β3 = √β2 by default; with ``bias_correction`` d_k·η is multiplied by √(1 − β2^(k+1)) / (1 − β1^(k+1)). The
estimated step size d·η is what the trainer logs as ``d_lr`` next to ``lr``. The update is the authors' code
(``prodigyopt.Prodigy``, ``slice_p=1``), equal to it in float64 (tested), with s and w₀ kept in each parameter's
shape. Memory: four tensors per parameter (w₀, s, m, v).

On a GPU a step reads nothing back from the device: d, d_max, d̂, r, ‖s‖₁ and k are 0-dim tensors on the parameters'
device (:mod:`descend.optim.estimates`; numbers in ``state_dict()``), the sums are computed there, and the
authors' early return while ‖s‖₁ = 0 (no gradient yet) is a ``torch.where`` that keeps the estimates and moves no
weight (the per-parameter ``step`` counts every call that saw the parameter's gradient). The elementwise updates
run as torch's foreach kernels (one launch per device and dtype on a GPU), with one scratch tensor per parameter
during a step. On the CPU the step is the authors' code, reading its two sums per parameter back as numbers (see
:mod:`descend.optim.estimates`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.optim.estimates import EstimatingOptimizer, by_kind, coefficient, into, total


class Prodigy(EstimatingOptimizer):
    """Prodigy, as in the module docstring. ``growth_rate=None`` means no limit on d's growth."""

    estimates = ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k")

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
        loss, lr = self.begin_step(closure, "prodigy")
        if not self.on_device():
            return self._step_on_host(lr, loss)
        kinds = [(group, ps) for group in self.param_groups for ps in by_kind(group["params"])]
        for _, ps in kinds:
            for p in ps:
                if "step" not in self.state[p]:
                    zero = torch.zeros_like(p)
                    self.state[p].update(
                        step=0, s=zero, p0=p.detach().clone(), exp_avg=zero.clone(), exp_avg_sq=zero.clone()
                    )
        trained = [(group, ps) for group, ps in kinds if group["lr"] > 0.0]
        if not trained:  # ‖s‖₁ = 0: the authors' code returns here
            return loss
        first = self.param_groups[0]
        e = self.estimates_on(trained[0][1][0].device)
        beta1, beta2, d, k = first["beta1"], first["beta2"], e["d"], e["k"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        dlr = d * lr
        if first["bias_correction"]:
            dlr = dlr * ((1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1)))
        deltas, norms, scratch = [], [], {}  # scratch: one buffer per parameter for the step (see _update)
        for i, (group, ps) in enumerate(kinds):
            if group["lr"] == 0.0:
                continue
            grads, like = [p.grad for p in ps], ps[0]
            if group["weight_decay"] != 0 and not group["decouple"]:
                grads = torch._foreach_add(grads, ps, alpha=group["weight_decay"])
            p0, s, m, v = ([self.state[p][key] for p in ps] for key in ("p0", "s", "exp_avg", "exp_avg_sq"))
            buf = scratch[i] = torch._foreach_sub(p0, ps)
            dots = [torch.dot(g.flatten(), x.flatten()) for g, x in zip(grads, buf, strict=True)]
            deltas.append((d / group["d0"]) * dlr * total(dots, d))
            torch._foreach_mul_(into(buf, grads), coefficient(d, like))  # d·g
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, buf, alpha=1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, buf, buf, value=1 - beta2)
            torch._foreach_mul_(buf, coefficient((d if group["safeguard_warmup"] else dlr) / group["d0"], like))
            torch._foreach_mul_(s, beta3)
            torch._foreach_add_(s, buf)
            norms.append(total(torch._foreach_norm(s, 1), d))
        d_denom = sum(norms)
        numerator = e["d_numerator"] * beta3 + sum(deltas)
        d_hat = first["d_coef"] * numerator / d_denom
        new_d = torch.where((d == first["d0"]) & (d_hat > d), d_hat, d)  # Python's max and min, NaN included
        d_max = torch.where(d_hat > e["d_max"], d_hat, e["d_max"])
        if first["growth_rate"] is not None:
            new_d = torch.where(new_d * first["growth_rate"] < d_max, new_d * first["growth_rate"], d_max)
        else:
            new_d = d_max
        skip = d_denom == 0  # no gradient yet: the authors' code returns before changing an estimate or a weight
        new = dict(d=new_d, d_max=d_max, d_hat=d_hat, d_numerator=numerator, d_denom=d_denom, k=k + 1)
        self.publish({key: torch.where(skip, e[key], value) for key, value in new.items()})
        step = torch.where(skip, 0.0, dlr)
        for i, (group, ps) in enumerate(kinds):
            self._update(group, ps, scratch.get(i), step, torch.where(skip, 1.0, new_d * group["eps"]))
        return loss

    def _step_on_host(self, lr: float, loss: Any) -> Any:
        """The step with the estimates as Python numbers and the sums read back: the authors' code, operation for
        operation (where a read costs less than the kernels that avoid it: the CPU)."""
        first, e = self.param_groups[0], self.as_numbers()
        beta1, beta2, k, d, d_max = first["beta1"], first["beta2"], e["k"], e["d"], e["d_max"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        correction = (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1)) if first["bias_correction"] else 1
        dlr = d * lr * correction
        growth = first["growth_rate"] if first["growth_rate"] is not None else math.inf
        d_numerator, delta_numerator, d_denom = e["d_numerator"] * beta3, 0.0, 0.0
        for group in self.param_groups:
            decay, d0 = group["weight_decay"], group["d0"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if decay != 0 and not group["decouple"]:
                    grad = grad.add(p, alpha=decay)
                state = self.state[p]
                if "step" not in state:
                    zero = torch.zeros_like(p)
                    state.update(step=0, s=zero, p0=p.detach().clone(), exp_avg=zero.clone(), exp_avg_sq=zero.clone())
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
        numerator = d_numerator + delta_numerator
        if lr > 0.0:
            d_hat = first["d_coef"] * numerator / d_denom
            if d == first["d0"]:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * growth)
        self.publish(dict(d_numerator=numerator, d_denom=d_denom, d=d, d_max=d_max, d_hat=d_hat, k=k + 1))
        for group in self.param_groups:
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
        return loss

    def _update(self, group: dict, ps: list[torch.Tensor], buf: list | None, step: torch.Tensor, floor: torch.Tensor):
        """w ← w − step·m / (√v + floor), decoupled decay first; floor = d·ε, or 1 in a skipped step (step = 0),
        where ε = 0 could make it 0/0. ``buf`` is this step's scratch (or None): on the CPU a new tensor costs
        more than a pass over one (no caching allocator), so the step makes one per parameter."""
        like, m, v = ps[0], [self.state[p]["exp_avg"] for p in ps], [self.state[p]["exp_avg_sq"] for p in ps]
        if group["weight_decay"] != 0 and group["decouple"]:
            buf = into(buf, ps)
            torch._foreach_mul_(buf, coefficient(-group["weight_decay"] * step, like))
            torch._foreach_add_(ps, buf)
        buf = into(buf, v)
        torch._foreach_sqrt_(buf)
        torch._foreach_add_(buf, coefficient(floor, like), alpha=1)  # alpha: the overload that keeps it a tensor
        torch._foreach_div_(buf, coefficient(-step, like))  # (√v + floor)/(−step): −∞ when step = 0, adding −0
        torch._foreach_addcdiv_(ps, m, buf)
        for p in ps:
            self.state[p]["step"] += 1

    def logs(self) -> dict[str, float]:
        """The step size the method uses: d·η (what a tuned Adam's lr would be); reads d from the device."""
        return {"d_lr": self.number("d") * self.param_groups[0]["lr"]}
