"""Muon for the hidden layers' weight matrices, AdamW for every other parameter (Jordan et al. 2024, "Muon: An
optimizer for hidden layers in neural networks"; Liu et al. 2025, "Muon is Scalable for LLM Training").

Muon orthogonalises the momentum of a weight matrix before stepping: with B the momentum buffer of W,

    B ← μ·B + (1 − μ)·g;   U = g + μ(B − g) (Nesterov) or B;   O = NS₅(U) ≈ U·(UᵀU)^(-1/2)
    W ← (1 − ηλ)·W − η'·O,   η' = η·√max(1, rows/cols) (Jordan) or 0.2·η·√max(rows, cols) (Liu: the RMS of AdamW)

where NS₅ is five Newton–Schulz iterations in bfloat16 (quintic coefficients 3.4445, −4.7750, 2.0315). It is
exactly ``torch.optim.Muon`` (its functional kernel runs the matrices; tested equal). AdamW (torch's kernel, the
same decoupled λ) takes the rest.

**Which parameters get Muon** (:func:`muon_parameters`), as its authors split them: every weight with 2 or more
dimensions of the hidden layers — linear weights, and convolution kernels flattened to (out_channels,
in_channels·kernel) as Jordan's code does — but never embeddings (``nn.Embedding`` / ``nn.EmbeddingBag``), biases,
normalisation layers' parameters (1-D) or the output layer (the last ``nn.Linear``/convolution the model
registers, whose weights map features to outputs rather than features to features).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim._muon import muon as muon_kernel  # torch.optim.Muon's own functional update
from torch.optim.adam import adam as adam_kernel  # torch.optim.AdamW's own functional update

from descend.errors import UserError

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's (Jordan et al. 2024)


def muon_parameters(model: nn.Module) -> set[str]:
    """Names of the parameters Muon updates (see the module docstring); AdamW takes every other one."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, _LAYERS)]
    output = layers[-1][0] if layers else None
    embedded = {
        f"{name}.{p}" if name else p
        for name, m in model.named_modules()
        if isinstance(m, _EMBEDDINGS)
        for p, _ in m.named_parameters(recurse=False)
    }
    chosen = set()
    for name, m in layers:
        if name == output:
            continue
        for pname, p in m.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            if p.ndim >= 2 and full not in embedded:
                chosen.add(full)
    return chosen


class Muon(torch.optim.Optimizer):
    """Muon on the groups marked ``muon=True``, AdamW on the others (see the module docstring).

    Build it with :func:`descend.optim.create` (``"muon"``), which splits a model's parameters; the state of a
    Muon parameter is its momentum buffer (its own shape), of an AdamW one torch's ``step``, ``exp_avg`` and
    ``exp_avg_sq``.
    """

    state_per_parameter = 1  # on the matrices; 2 (AdamW) on the rest

    def __init__(
        self,
        groups: list[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_eps: float = 1e-7,
        adjust_lr: str = "original",
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ):
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_eps=ns_eps,
            adjust_lr=adjust_lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            muon=False,
        )
        super().__init__(groups, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise UserError("muon updates matrices (2 or more dimensions) only; put vectors in a muon=False group")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)
        return loss

    def _muon(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])

        def flat(t: torch.Tensor) -> torch.Tensor:  # conv kernels as (out, in·kernel) matrices, as Jordan's code
            return t.view(t.shape[0], -1) if t.ndim > 2 else t

        muon_kernel(
            [flat(p) for p in params],
            [flat(p.grad) for p in params],
            [flat(b) for b in bufs],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=NS_COEFFICIENTS,
            ns_steps=group["ns_steps"],
            eps=group["ns_eps"],
            adjust_lr_fn=group["adjust_lr"],
            has_complex=False,
        )

    def _adamw(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        avgs, sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:  # torch.optim.AdamW's state, so its kernel (and a checkpoint) reads it as its own
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            avgs.append(state["exp_avg"])
            sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        adam_kernel(
            params,
            [p.grad for p in params],
            avgs,
            sqs,
            [],
            steps,
            foreach=False,
            decoupled_weight_decay=True,
            amsgrad=False,
            beta1=group["beta1"],
            beta2=group["beta2"],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
