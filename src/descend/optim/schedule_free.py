"""Schedule-Free SGD and AdamW (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024, "The Road Less
Scheduled"): no learning-rate schedule, and no need to know the length of training.

Three sequences, two of them stored: z (the SGD/Adam iterate, in the state), x (a weighted average of the z's,
the weights to evaluate) and y = (1 − β)·z + β·x (the point where gradients are taken). Per step t, with
c_{t+1} = w_t / Σ_{i≤t} w_i and w_t = (t+1)^r · η_max^p (η_max: the largest η so far, so warm-up steps count less):

    z_{t+1} = z_t − η·g(y_t)                 (SGD; AdamW: η·g/(√v̂ + ε), with v the EMA of g² as Adam's)
    x_{t+1} = (1 − c_{t+1})·x_t + c_{t+1}·z_{t+1}
    y_{t+1} = (1 − β)·z_{t+1} + β·x_{t+1}

The parameters hold y while training (**train mode**) and x for evaluation (**eval mode**); :meth:`eval` and
:meth:`train` switch between them (x = y + (1 − 1/β)(z − y) and back). The trainer switches for you
(:mod:`descend.train.optimizer_events`): train mode during the training batches, eval mode for validation,
epoch-end checkpoints, early stopping's best weights and the weights a fit ends with. Weight decay is λ·y added to
the (normalised) gradient, as the authors'. The update is written as theirs (the ``schedulefree`` package's
foreach path), operation for operation, and the tests hold it equal to that package in float64.

Memory: z per parameter (SGD), z and v (AdamW): as SGD with momentum and as Adam. Schedules are refused: the
method replaces them (``warmup_steps`` is its warm-up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from descend.errors import UserError


class _ScheduleFree(torch.optim.Optimizer):
    schedule_free = True
    state_per_parameter = 1

    def __init__(self, params: Iterable[Any], **defaults: Any):
        defaults.update(k=0, train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)
        super().__init__(params, defaults)

    def _beta(self, group: dict[str, Any]) -> float:
        raise NotImplementedError

    @torch.no_grad()
    def eval(self) -> None:
        """Put the average x in the parameters (for evaluation and saving); a no-op in eval mode."""
        for group in self.param_groups:
            if group["train_mode"]:
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(end=self.state[p]["z"], weight=1 - 1 / self._beta(group))
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Put the gradient point y back in the parameters (for training); a no-op in train mode."""
        for group in self.param_groups:
            if not group["train_mode"]:
                for p in group["params"]:
                    if "z" in self.state[p]:
                        p.lerp_(end=self.state[p]["z"], weight=1 - self._beta(group))
                group["train_mode"] = True

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not self.param_groups[0]["train_mode"]:
            raise UserError(
                "a schedule-free optimizer steps in train mode: call opt.train() before training and "
                "opt.eval() before evaluating (descend's Trainer does both)"
            )
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            k, warmup = group["k"], group["warmup_steps"]
            lr = group["lr"] * ((k + 1) / warmup if k < warmup else 1.0)
            group["scheduled_lr"] = lr
            lr_max = group["lr_max"] = max(lr, group["lr_max"])
            weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
            weight_sum = group["weight_sum"] = group["weight_sum"] + weight
            ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
            active = [p for p in group["params"] if p.grad is not None]
            for p in active:
                if "z" not in self.state[p]:
                    self._init_state(self.state[p], p)
            if active:
                self._update(group, active, lr, ckp1)
            group["k"] = k + 1
        return loss

    def _init_state(self, state: dict[str, Any], p: torch.Tensor) -> None:
        state["z"] = torch.clone(p, memory_format=torch.preserve_format)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], lr: float, ckp1: float) -> None:
        raise NotImplementedError

    def logs(self) -> dict[str, float]:
        """The learning rate after warm-up (what the step used), for the training log."""
        return {"scheduled_lr": self.param_groups[0]["scheduled_lr"]}


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-Free SGD: z ← z − η(g + λy), x and y as in the module docstring, β = ``momentum``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ):
        super().__init__(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
        )

    def _beta(self, group: dict[str, Any]) -> float:
        return group["momentum"]

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], lr: float, ckp1: float) -> None:
        grads = [p.grad for p in params]
        z = [self.state[p]["z"] for p in params]
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_lerp_(params, z, weight=ckp1)
        torch._foreach_add_(params, grads, alpha=lr * (group["momentum"] * (1 - ckp1) - 1))
        torch._foreach_sub_(z, grads, alpha=lr)


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-Free AdamW: z ← z − η(g/(√v̂ + ε) + λy), v ← β2·v + (1 − β2)·g², β = ``beta1``."""

    state_per_parameter = 2

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0025,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ):
        super().__init__(
            params,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            r=r,
            weight_lr_power=weight_lr_power,
        )

    def _beta(self, group: dict[str, Any]) -> float:
        return group["beta1"]

    def _init_state(self, state: dict[str, Any], p: torch.Tensor) -> None:
        super()._init_state(state, p)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], lr: float, ckp1: float) -> None:
        beta1, beta2 = group["beta1"], group["beta2"]
        grads = [p.grad for p in params]
        z = [self.state[p]["z"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(v, 1 - beta2 ** (group["k"] + 1))
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        normalized = torch._foreach_div(grads, denom)
        if group["weight_decay"] != 0:
            torch._foreach_add_(normalized, params, alpha=group["weight_decay"])
        torch._foreach_lerp_(params, z, weight=ckp1)
        torch._foreach_add_(params, normalized, alpha=lr * (beta1 * (1 - ckp1) - 1))
        torch._foreach_sub_(z, normalized, alpha=lr)
