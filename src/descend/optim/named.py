"""The named optimizers: each one a chain of parts, and torch's own kernels where the request is exactly a
torch algorithm.

=========  ==============================================================================================
gd         w ← w − ηg                               (full-batch GD or SGD: the batch size decides)
momentum   first_moment(form) [+ nesterov]         heavy_ball v=ρv+g, w−=ηv | velocity v=ρv−ηg, w+=v
                                                    | ema v=βv+(1−β)g, w−=ηv
nesterov   the same with the look-ahead step
adagrad    v += g²;  w −= η g/(√v + ε)             (Duchi et al. 2011; eps_placement="inside": g/√(v + ε))
rmsprop    v = ρv + (1−ρ)g²;  w −= η g/(√v + ε)    [+ heavy-ball momentum on the scaled gradient, as torch]
adadelta   v = ρv + (1−ρ)g²;  Δ = √(u+ε)/√(v+ε)·g;  u = ρu + (1−ρ)Δ²;  w −= ηΔ   (ε inside, Zeiler)
adam       m = β1m + (1−β1)g;  v = β2v + (1−β2)g²;  w −= η m̂/(√v̂ + ε)   (bias_correction=false: m, v)
adamw      adam with decoupled weight decay, weight_decay=0.01 by default (Loshchilov & Hutter 2019, Alg. 2)
nadam      adam with the look-ahead first moment and μ_t schedule (Dozat 2016, torch.optim.NAdam)
newton     w −= α (∇²f)⁻¹∇f, damped; see :class:`descend.optim.newton.Newton`
lion       w −= η sign(β1m + (1−β1)g);  m = β2m + (1−β2)g   (Chen et al. 2023; :mod:`descend.optim.lion`)
=========  ==============================================================================================

The newer methods that are not a chain of parts each have their own module: ``muon``
(:mod:`~descend.optim.muon`), ``adafactor`` (torch.optim.Adafactor), ``schedule_free_sgd`` and
``schedule_free_adamw`` (:mod:`~descend.optim.schedule_free`), ``prodigy`` (:mod:`~descend.optim.prodigy`),
``dadapt_sgd`` (:mod:`~descend.optim.dadaptation`); SAM and Lookahead go around any of them
(:mod:`~descend.optim.wrappers`).

Every optimizer takes ``weight_decay`` with ``weight_decay_mode`` l2 (g += λw first) or decoupled
(w −= ηλw outside the scaling), and ``exclude_from_decay`` (biases and normalisation layers by default).
"""

from __future__ import annotations

from typing import Any

import torch

from descend.optim import parts as P
from descend.optim.composed import ComposedOptimizer
from descend.optim.lion import sign_momentum
from descend.optim.parts import Part

STRUCTURAL = ("weight_decay_mode", "exclude_from_decay", "implementation", "momentum_form", "nesterov",
              "sam_rho", "lookahead_k", "lookahead_alpha",
              "bias_correction", "eps_placement", "max_params")


def chain(name: str, o: dict[str, Any]) -> list[Part]:
    """The parts of optimizer ``name`` with validated options ``o`` (from :func:`options.validate`)."""
    decay = o["weight_decay_mode"]
    head: list[Part] = []
    if o.get("bias_correction") and name in ("adam", "adamw", "nadam"):
        head.append(P.bias_correction())
    if decay == "l2":
        head.append(P.l2_decay())
    tail: list[Part] = [P.decoupled_decay()] if decay == "decoupled" else []
    if name == "gd":
        body = [P.scale_by_lr()]
    elif name in ("momentum", "nesterov"):
        form = o["momentum_form"]
        body = [P.first_moment(form, nesterov=name == "nesterov" or o["nesterov"], decay="momentum")]
        if form != "velocity":
            body.append(P.scale_by_lr())
    elif name == "adagrad":
        body = [P.second_moment("sum"), P.precondition(o["eps_placement"]), P.scale_by_lr()]
    elif name == "rmsprop":
        body = [P.second_moment("ema", decay="rho"), P.precondition(o["eps_placement"])]
        if o["momentum"] > 0:
            body.append(P.first_moment("heavy_ball", decay="momentum"))
        body.append(P.scale_by_lr())
    elif name == "adadelta":
        body = [P.second_moment("ema", decay="rho"), P.precondition("inside"), P.adadelta_units(),
                P.scale_by_lr()]
    elif name in ("adam", "adamw", "nadam"):
        nesterov = name == "nadam" or o.get("nesterov", False)
        schedule = "momentum_decay" if name == "nadam" else None
        body = [P.second_moment("ema", decay="beta2"),
                P.first_moment("ema", nesterov=nesterov, decay="beta1", schedule=schedule),
                P.precondition(o["eps_placement"]), P.scale_by_lr()]
    elif name == "lion":
        body = [sign_momentum(), P.scale_by_lr()]
    else:
        raise KeyError(name)
    return head + body + tail


def group_defaults(o: dict[str, Any]) -> dict[str, Any]:
    """The numeric hyper-parameters that live in param groups (and may be changed by schedules)."""
    return {k: v for k, v in o.items() if k not in STRUCTURAL}


def torch_equivalent(name: str, o: dict[str, Any]) -> tuple[type, dict[str, Any]] | None:
    """torch's optimizer class and arguments computing exactly the same update, or None if torch has none."""
    wd, mode = o["weight_decay"], o["weight_decay_mode"]
    l2 = mode == "l2" or wd == 0
    if name == "gd":  # for plain GD the two decay modes are the same update: (1 − ηλ)w − ηg
        return torch.optim.SGD, dict(lr=o["lr"], weight_decay=wd)
    if name in ("momentum", "nesterov"):
        if o["momentum_form"] != "heavy_ball" or not l2:
            return None
        nesterov = name == "nesterov" or o["nesterov"]
        return torch.optim.SGD, dict(lr=o["lr"], momentum=o["momentum"], nesterov=nesterov, weight_decay=wd)
    if name in ("adagrad", "rmsprop", "adam", "adamw", "nadam") and o["eps_placement"] != "outside":
        return None
    if name == "adagrad":
        return (torch.optim.Adagrad, dict(lr=o["lr"], eps=o["eps"], weight_decay=wd)) if l2 else None
    if name == "rmsprop":
        return (torch.optim.RMSprop, dict(lr=o["lr"], alpha=o["rho"], eps=o["eps"], weight_decay=wd,
                                          momentum=o["momentum"])) if l2 else None
    if name == "adadelta":
        kwargs = dict(lr=o["lr"], rho=o["rho"], eps=o["eps"], weight_decay=wd)
        return (torch.optim.Adadelta, kwargs) if l2 else None
    if name in ("adam", "adamw", "nadam"):
        if not o["bias_correction"]:
            return None
        common = dict(lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=wd)
        if name == "nadam":
            return torch.optim.NAdam, dict(common, momentum_decay=o["momentum_decay"],
                                           decoupled_weight_decay=not l2)
        if o.get("nesterov"):  # constant μ = β1: torch's NAdam has no such setting (ψ = 0 gives μ = β1/2)
            return None
        return (torch.optim.Adam if l2 else torch.optim.AdamW), common
    return None


# torch's fused kernels (every device torch has them for: CPU since torch 2.4, CUDA, ...). On CPU they beat
# foreach in benchmarks/optimizer_step.py for all four (Adam/AdamW by 3-10x); RMSprop, Adadelta and NAdam
# have no fused kernel and run foreach.
_FUSED = {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad}
FUSED_ON_CPU: set[type] = set(_FUSED)


def build_torch(cls: type[torch.optim.Optimizer], kwargs: dict[str, Any], groups: list[dict[str, Any]]):
    """torch's optimizer with its fastest kernel for the parameters' device: fused or foreach."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    floating = all(p.is_floating_point() for p in params)
    fused = cls in _FUSED and floating and len(devices) == 1 and (
        devices != {"cpu"} or cls in FUSED_ON_CPU)
    kind = dict(fused=True) if fused else dict(foreach=True)
    return cls(groups, **kwargs, **kind)


def build_composed(name: str, o: dict[str, Any], groups: list[dict[str, Any]]) -> ComposedOptimizer:
    return ComposedOptimizer(groups, chain(name, o), **group_defaults(o))
