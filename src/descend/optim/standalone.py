"""The optimizers that are not a chain of parts, built from validated options: each its authors' algorithm in its
own module (or torch's kernel: Adafactor), with the options' names mapped to the constructor's."""

from __future__ import annotations

from typing import Any

import torch

from descend.errors import UserError
from descend.optim.dadaptation import DAdaptSGD
from descend.optim.groups import param_groups
from descend.optim.muon import Muon, muon_parameters
from descend.optim.prodigy import Prodigy
from descend.optim.schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD


def _take(o: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: o[n] for n in names}


def _muon(params: Any, o: dict[str, Any]) -> torch.optim.Optimizer:
    if not isinstance(params, torch.nn.Module):
        raise UserError(
            "muon splits a model's parameters by layer (Muon for hidden matrices, AdamW for the rest): "
            "pass the nn.Module, not tensors"
        )
    chosen = {id(p) for n, p in params.named_parameters() if n in muon_parameters(params)}
    lr = {"lr": o["adamw_lr"]} if o["adamw_lr"] is not None else {}
    groups = []  # each decay group (biases and norms excluded as for any optimizer) split into Muon's and AdamW's
    for g in param_groups(params, o["weight_decay"], o["exclude_from_decay"]):
        options = {k: v for k, v in g.items() if k != "params"}
        matrices = [p for p in g["params"] if id(p) in chosen]
        rest = [p for p in g["params"] if id(p) not in chosen]
        groups += [{**options, "params": matrices, "muon": True}] if matrices else []
        groups += [{**options, **lr, "params": rest, "muon": False}] if rest else []
    return Muon(
        groups,
        **_take(
            o, "lr", "weight_decay", "momentum", "nesterov", "ns_steps", "ns_eps", "adjust_lr", "beta1", "beta2", "eps"
        ),
    )


def _adafactor(groups: list[dict[str, Any]], o: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.Adafactor(
        groups,
        lr=o["lr"],
        beta2_decay=o["beta2_decay"],
        eps=(o["eps1"], o["eps2"]),
        d=o["clip_threshold"],
        weight_decay=o["weight_decay"],
        foreach=True,
    )


def _prodigy(groups: list[dict[str, Any]], o: dict[str, Any]) -> torch.optim.Optimizer:
    return Prodigy(
        groups,
        decouple=o["weight_decay_mode"] == "decoupled",
        **_take(
            o,
            "lr",
            "beta1",
            "beta2",
            "beta3",
            "eps",
            "weight_decay",
            "bias_correction",
            "safeguard_warmup",
            "d0",
            "d_coef",
            "growth_rate",
        ),
    )


BUILDERS = {
    "adafactor": _adafactor,
    "schedule_free_sgd": lambda groups, o: ScheduleFreeSGD(
        groups, **_take(o, "lr", "momentum", "weight_decay", "warmup_steps", "r", "weight_lr_power")
    ),
    "schedule_free_adamw": lambda groups, o: ScheduleFreeAdamW(
        groups, **_take(o, "lr", "beta1", "beta2", "eps", "weight_decay", "warmup_steps", "r", "weight_lr_power")
    ),
    "prodigy": _prodigy,
    "dadapt_sgd": lambda groups, o: DAdaptSGD(
        groups, **_take(o, "lr", "momentum", "weight_decay", "d0", "growth_rate")
    ),
}
NEEDS_MODULE = {"muon": _muon}  # builders that split a model's parameters themselves


def build(name: str, params: Any, o: dict[str, Any]) -> torch.optim.Optimizer:
    """The optimizer ``name`` (one of :data:`BUILDERS` or :data:`NEEDS_MODULE`) over ``params``."""
    if name in NEEDS_MODULE:
        return NEEDS_MODULE[name](params, o)
    return BUILDERS[name](param_groups(params, o["weight_decay"], o["exclude_from_decay"]), o)
