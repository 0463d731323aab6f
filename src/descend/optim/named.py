"""The named optimizers: one small function per name returning its chain of parts (as optax's ``alias.py``),
each with its update rule and original source; and torch's own kernels where the request is exactly a torch
algorithm. A new optimizer is a function here (a few parts) and an entry in :data:`CHAINS`. ``newton`` is not
a chain: :class:`descend.optim.newton.Newton`.

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


def _decayed(o: dict[str, Any], *body: Part) -> list[Part]:
    """``body`` with the weight decay the options ask for: L2 in the gradient first, or decoupled last."""
    mode = o["weight_decay_mode"]
    head = [P.l2_decay()] if mode == "l2" else []
    return head + list(body) + ([P.decoupled_decay()] if mode == "decoupled" else [])


def gd(o: dict[str, Any]) -> list[Part]:
    """Gradient descent: w ← w − ηg (Cauchy 1847; stochastic: Robbins & Monro 1951). Full-batch or SGD: the
    batch size decides."""
    return _decayed(o, P.scale_by_lr())


def momentum(o: dict[str, Any]) -> list[Part]:
    """Momentum (Polyak 1964) in ``momentum_form``: heavy_ball v ← ρv + g, w ← w − ηv | velocity v ← ρv − ηg,
    w ← w + v | ema v ← βv + (1 − β)g, w ← w − ηv; ``nesterov=True`` takes the look-ahead step."""
    form = o["momentum_form"]
    moment = P.first_moment(form, nesterov=o.get("nesterov", False), decay="momentum")
    return _decayed(o, moment) if form == "velocity" else _decayed(o, moment, P.scale_by_lr())


def nesterov(o: dict[str, Any]) -> list[Part]:
    """Nesterov's accelerated gradient (Nesterov 1983; as Sutskever et al. 2013 write it):
    v ← ρv + g, w ← w − η(g + ρv)."""
    return momentum({**o, "nesterov": True})


def adagrad(o: dict[str, Any]) -> list[Part]:
    """AdaGrad (Duchi, Hazan & Singer 2011): v ← v + g², w ← w − ηg/(√v + ε) (``eps_placement="inside"``:
    g/√(v + ε))."""
    return _decayed(o, P.scale_by_rms("sum", eps=o["eps_placement"]), P.scale_by_lr())


def rmsprop(o: dict[str, Any]) -> list[Part]:
    """RMSProp (Tieleman & Hinton 2012): v ← ρv + (1 − ρ)g², w ← w − ηg/(√v + ε); with ``momentum`` > 0,
    heavy-ball momentum on the scaled gradient, as torch.optim.RMSprop."""
    body = [P.scale_by_rms("ema", decay="rho", eps=o["eps_placement"])]
    if o["momentum"] > 0:
        body.append(P.first_moment("heavy_ball", decay="momentum"))
    return _decayed(o, *body, P.scale_by_lr())


def adadelta(o: dict[str, Any]) -> list[Part]:
    """Adadelta (Zeiler 2012), ε inside the roots: v ← ρv + (1 − ρ)g², Δ = √(u + ε)/√(v + ε)·g,
    u ← ρu + (1 − ρ)Δ², w ← w − ηΔ."""
    return _decayed(o, P.scale_by_rms("ema", decay="rho", eps="inside"), P.adadelta_units(), P.scale_by_lr())


def adam(o: dict[str, Any]) -> list[Part]:
    """Adam (Kingma & Ba 2015, Algorithm 1): m ← β1m + (1 − β1)g, v ← β2v + (1 − β2)g², w ← w − ηm̂/(√v̂ + ε)
    (``bias_correction=False``: m and v as they are; ``nesterov=True``: NAdam's look-ahead with μ = β1)."""
    return _adam(o, nesterov=o.get("nesterov", False))


def _adam(o: dict[str, Any], nesterov: bool, schedule: str | None = None) -> list[Part]:
    moments = P.scale_by_adam(eps=o["eps_placement"], bias_correction=o["bias_correction"], nesterov=nesterov,
                              schedule=schedule)
    return _decayed(o, moments, P.scale_by_lr())


def adamw(o: dict[str, Any]) -> list[Part]:
    """AdamW (Loshchilov & Hutter 2019, Algorithm 2): Adam with decoupled weight decay w ← w − ηλw
    (its options default to ``weight_decay_mode="decoupled"``, λ = 0.01)."""
    return adam(o)


def nadam(o: dict[str, Any]) -> list[Part]:
    """NAdam (Dozat 2016; torch.optim.NAdam): Adam with Nesterov's look-ahead first moment and the momentum
    schedule μ_t = β1(1 − ½·0.96^(tψ)), ψ = ``momentum_decay``."""
    return _adam(o, nesterov=True, schedule="momentum_decay")


def lion(o: dict[str, Any]) -> list[Part]:
    """Lion (Chen et al. 2023): w ← w − η·sign(β1m + (1 − β1)g), m ← β2m + (1 − β2)g, decoupled decay
    (:mod:`descend.optim.lion`)."""
    return _decayed(o, sign_momentum(), P.scale_by_lr())


CHAINS = {"gd": gd, "momentum": momentum, "nesterov": nesterov, "adagrad": adagrad, "rmsprop": rmsprop,
          "adadelta": adadelta, "adam": adam, "adamw": adamw, "nadam": nadam, "lion": lion}


def chain(name: str, o: dict[str, Any]) -> list[Part]:
    """The parts of optimizer ``name`` with validated options ``o`` (from :func:`options.validate`)."""
    return CHAINS[name](o)


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


# torch's fused kernels (every device torch has them for: CPU since torch 2.4, CUDA, ...): one kernel per step
# instead of one per operation, faster than foreach wherever both exist (benchmarks/optimizer_step.py measures
# it); RMSprop, Adadelta and NAdam have no fused kernel and run foreach.
_FUSED = {torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad}


def build_torch(cls: type[torch.optim.Optimizer], kwargs: dict[str, Any], groups: list[dict[str, Any]]):
    """torch's optimizer with its fastest kernel for the parameters' device: fused or foreach."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    floating = all(p.is_floating_point() for p in params)
    fused = cls in _FUSED and floating and len(devices) == 1
    kind = dict(fused=True) if fused else dict(foreach=True)
    return cls(groups, **kwargs, **kind)


def build_composed(name: str, o: dict[str, Any], groups: list[dict[str, Any]]) -> ComposedOptimizer:
    return ComposedOptimizer(groups, chain(name, o), **group_defaults(o))
