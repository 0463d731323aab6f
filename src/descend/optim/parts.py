"""The parts optimizers are made of, one idea each: momentum, adaptive scaling, weight decay, the step size.

An optimizer is a short chain of parts (in the spirit of optax's ``GradientTransformation``). Each part is a
transformation: it receives the update built so far (starting from the gradient) and returns the next one,
reading nothing but that update, the weights, its own state buffers and the group's hyper-parameters. The
chain ends by adding the update to the weights. Parts work on *lists* of tensors with torch's multi-tensor
``torch._foreach_*`` kernels, so a step costs a handful of kernel launches per chain, not one Python loop per
parameter.

Numeric hyper-parameters (``lr``, ``momentum``, ``beta1``, ``eps``, ...) are read from the parameter group at
every step, so learning-rate schedules and torch's LR schedulers that write ``group["lr"]`` just work. The
constructor arguments of a part are structural choices (which momentum formulation, where ε goes, whether the
moments are bias-corrected).

The update is kept *lazy*: ``scale * num / den``, so the common chains (Adam, RMSProp, AdaGrad, momentum) end
in a single ``addcdiv_``/``add_`` on the weights, with no more temporaries than torch's own foreach kernels.

Notation: g the gradient, w the weights, η the learning rate, ρ / β the decay rates, t the step
(counted from 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from descend.errors import UserError

_foreach = torch  # the torch._foreach_* kernels live on the torch module


@dataclass
class Update:
    """The update being built: ``scale * num / den`` element-wise (``den`` None means 1).

    ``owned`` says whether ``num`` is a temporary this step may overwrite; when False it aliases a gradient or
    a state buffer and must be copied before any in-place change.
    """

    num: list[Tensor]
    den: list[Tensor] | None = None
    scale: float = 1.0
    owned: bool = False

    def materialize(self) -> list[Tensor]:
        """Return ``scale * num / den`` as fresh tensors this step owns, and make the update just that."""
        if self.den is not None:
            out = _foreach._foreach_div(self.num, self.den)
            if self.scale != 1.0:
                _foreach._foreach_mul_(out, self.scale)
        elif self.owned:
            out = self.num
            if self.scale != 1.0:
                _foreach._foreach_mul_(out, self.scale)
        else:
            out = _foreach._foreach_mul(self.num, self.scale)
        self.num, self.den, self.scale, self.owned = out, None, 1.0, True
        return out

    def raw(self) -> list[Tensor]:
        """``num`` when the update is a plain tensor list (no den, scale 1), else the materialized update."""
        return self.num if self.den is None and self.scale == 1.0 else self.materialize()


@dataclass
class Context:
    """What a part may look at during one step: the weights, their group, the step t and the state."""

    params: list[Tensor]
    group: dict[str, Any]
    step: int
    buffers: dict[str, list[Tensor]]
    states: list[dict[str, Any]]


class Part:
    """One idea of an optimizer: a transformation ``update(u, ctx) -> u'``.

    Subclasses set ``buffers`` (per-parameter state tensors, zero at start) and ``hypers`` (group keys they
    read), and implement :meth:`update`. The class attributes ``first_moment``, ``second_moment`` ("sum",
    "ema" or None) and ``bias_correction`` say what the part tracks (the property table reads them).
    """

    name = "part"
    buffers: tuple[str, ...] = ()
    hypers: tuple[str, ...] = ()
    applies_lr = False  # True for the part that turns the direction into a step (multiplies by -η)
    first_moment = False
    second_moment: str | None = None
    bias_correction = False

    def update(self, u: Update, ctx: Context) -> Update:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self.name}()"


def chain(*parts: Part) -> list[Part]:
    """The parts in the order they transform the update (what :class:`ComposedOptimizer` runs)."""
    return list(parts)


class L2Decay(Part):
    """L2 regularization in the gradient: g ← g + λw, i.e. the gradient of J(w) + λ/2·‖w‖², *before* the
    optimizer sees it.

    With plain gradient descent this is w ← (1 − ηλ)w − η∇J. Adaptive methods then divide λw by √v like the
    rest of the gradient, so weights with large gradients are decayed less (Loshchilov & Hutter 2019).
    """

    name = "l2_decay"
    hypers = ("weight_decay",)

    def update(self, u: Update, ctx: Context) -> Update:
        wd = ctx.group["weight_decay"]
        if wd == 0:
            return u
        if u.owned and u.den is None and u.scale == 1.0:
            _foreach._foreach_add_(u.num, ctx.params, alpha=wd)
            return u
        return Update(_foreach._foreach_add(u.raw(), ctx.params, alpha=wd), owned=True)


class DecoupledDecay(Part):
    """Decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2 "AdamW"):
    w ← w − ηλw, applied to the weights outside the optimizer's scaling, with the same η as the step
    (torch's convention; the paper writes η_t for the schedule multiplier, the same thing when the schedule
    is folded into η). Place it after every part that reads the weights.
    """

    name = "decoupled_decay"
    hypers = ("weight_decay", "lr")

    def update(self, u: Update, ctx: Context) -> Update:
        wd = ctx.group["weight_decay"]
        if wd != 0:
            _foreach._foreach_mul_(ctx.params, 1.0 - ctx.group["lr"] * wd)
        return u


def _accumulate_second(v: list[Tensor], g: list[Tensor], kind: str, beta: float) -> None:
    """v ← v + g² (``sum``) or v ← βv + (1 − β)g² (``ema``), in place."""
    if kind == "sum":
        _foreach._foreach_addcmul_(v, g, g, value=1.0)
    else:
        _foreach._foreach_mul_(v, beta)
        _foreach._foreach_addcmul_(v, g, g, value=1.0 - beta)


def _divide_by_root(u: Update, v: list[Tensor], debias: float, eps: float, placement: str) -> Update:
    """u / (√(v/debias) + ε) (``outside``) or u / √(v/debias + ε) (``inside``), kept lazy."""
    if placement == "outside":
        den = _foreach._foreach_sqrt(v)
        if debias != 1.0:
            _foreach._foreach_div_(den, math.sqrt(debias))
        _foreach._foreach_add_(den, eps)
    else:
        den = _foreach._foreach_div(v, debias) if debias != 1.0 else _foreach._foreach_add(v, eps)
        if debias != 1.0:
            _foreach._foreach_add_(den, eps)
        _foreach._foreach_sqrt_(den)
    if u.den is not None:
        u.materialize()
    return Update(u.num, den, u.scale, u.owned)


def _check_eps(eps: str) -> str:  # the eps_placement option
    if eps not in ("outside", "inside"):
        raise UserError(f"eps_placement must be one of ['inside', 'outside'], got {eps!r}")
    return eps


class ScaleByRms(Part):
    """Divide the update by the root of its tracked second moment, for per-parameter learning rates.

    - ``kind="sum"`` (AdaGrad, Duchi, Hazan & Singer 2011): v ← v + u²   (not leaky: the effective step only
      shrinks)
    - ``kind="ema"`` (RMSProp, Tieleman & Hinton 2012, a "leaky AdaGrad"): v ← ρv + (1 − ρ)u², ρ read from
      group[``decay``]; ``bias_correction=True`` uses v̂ = v/(1 − ρ^t)

    then u ← u / (√v̂ + ε) (``eps="outside"``: Kingma & Ba 2015 and torch's AdaGrad, RMSprop) or
    u / √(v̂ + ε) (``eps="inside"``: Adadelta, Zeiler 2012, and some textbooks' AdaGrad).
    """

    name = "scale_by_rms"
    buffers = ("v",)

    def __init__(self, kind: str = "ema", decay: str = "rho", eps: str = "outside", bias_correction: bool = False):
        if kind not in ("sum", "ema"):
            raise UserError(f"second moment kind must be one of ['ema', 'sum'], got {kind!r}")
        if bias_correction and kind == "sum":
            raise UserError("bias correction applies to moving averages (kind='ema'), not to AdaGrad's sum")
        self.kind, self.decay, self.eps_placement = kind, decay, _check_eps(eps)
        self.second_moment, self.bias_correction = kind, bool(bias_correction)
        self.hypers = ((decay,) if kind == "ema" else ()) + ("eps",)

    def update(self, u: Update, ctx: Context) -> Update:
        v = ctx.buffers["v"]
        beta = ctx.group[self.decay] if self.kind == "ema" else 0.0
        _accumulate_second(v, u.raw(), self.kind, beta)
        debias = 1.0 - beta**ctx.step if self.bias_correction else 1.0
        return _divide_by_root(u, v, debias, ctx.group["eps"], self.eps_placement)

    def __repr__(self) -> str:
        return f"scale_by_rms({self.kind!r}, {self.decay!r}, {self.eps_placement!r}, {self.bias_correction})"


def _nadam_mu(beta: float, psi: float | None, t: int) -> float:
    """NAdam's momentum schedule μ_t = β(1 − ½·0.96^(tψ)) (Dozat 2016, torch.optim.NAdam); β without one."""
    return beta if psi is None else beta * (1.0 - 0.5 * 0.96 ** (t * psi))


def _ema_first(u: Update, ctx: Context, m: list[Tensor], beta: float, correct: bool, nesterov: bool,
               schedule: str | None) -> Update:
    """m ← βm + (1 − β)g and the step direction: m (÷ (1 − β^t) when ``correct``), or NAdam's look-ahead."""
    g = u.raw()
    _foreach._foreach_lerp_(m, g, 1.0 - beta)
    t = ctx.step
    if not nesterov:
        return Update(m, scale=1.0 / (1.0 - beta**t) if correct else 1.0)
    psi = ctx.group[schedule] if schedule else None
    mu, mu_next = _nadam_mu(beta, psi, t), _nadam_mu(beta, psi, t + 1)
    a, b = 1.0 - mu, mu_next
    if correct:
        product = ctx.states[0].get("mu_product", 1.0) * mu
        for s in ctx.states:
            s["mu_product"] = product
        a, b = a / (1.0 - product), b / (1.0 - product * mu_next)
    out = _foreach._foreach_mul(m, b)
    _foreach._foreach_add_(out, g, alpha=a)
    return Update(out, owned=True)


class FirstMoment(Part):
    """Track the first moment of the gradient ("momentum", Polyak 1964), in its three usual formulations.

    - ``form="heavy_ball"``: v ← ρv + g;  w ← w − ηv   (torch's SGD)
    - ``form="velocity"``: v ← ρv − ηg;  w ← w + v   (η enters the velocity; Sutskever et al. 2013)
    - ``form="ema"`` ("dampened" momentum, Adam's m): v ← βv + (1 − β)g;  w ← w − ηv

    The first two give the same sequence of weights for a constant η. ``nesterov=True`` is the look-ahead
    variant (Nesterov 1983), written with the gradient at the current weights (Sutskever et al. 2013): the
    step uses g_term + ρ·v_new instead of v_new, where g_term is what the gradient contributes to v (g, −ηg
    or (1 − β)g). ``bias_correction=True`` (EMA form only) divides by 1 − β^t (Kingma & Ba 2015), with the
    look-ahead correcting both terms (NAdam); ``schedule`` names a group key ψ for NAdam's momentum schedule
    μ_t = β(1 − ½·0.96^(tψ)). ρ is read from group[``decay``].
    """

    name = "first_moment"
    buffers = ("m",)
    first_moment = True

    def __init__(self, form: str = "heavy_ball", nesterov: bool = False, decay: str = "momentum",
                 schedule: str | None = None, bias_correction: bool = False):
        if form not in ("heavy_ball", "velocity", "ema"):
            raise UserError(f"momentum_form must be one of ['ema', 'heavy_ball', 'velocity'], got {form!r}")
        if schedule is not None and not (form == "ema" and nesterov):
            raise UserError("a momentum schedule needs momentum_form='ema' with nesterov=True (NAdam)")
        if bias_correction and form != "ema":
            raise UserError("bias correction applies to moving averages (momentum_form='ema')")
        self.form, self.nesterov, self.decay, self.schedule = form, bool(nesterov), decay, schedule
        self.bias_correction = bool(bias_correction)
        self.hypers = (decay,) + (("lr",) if form == "velocity" else ()) + ((schedule,) if schedule else ())
        self.applies_lr = form == "velocity"

    def update(self, u: Update, ctx: Context) -> Update:
        m, rho = ctx.buffers["m"], ctx.group[self.decay]
        if self.form == "ema":
            return _ema_first(u, ctx, m, rho, self.bias_correction, self.nesterov, self.schedule)
        coef = u.scale * (-ctx.group["lr"] if self.form == "velocity" else 1.0)
        _foreach._foreach_mul_(m, rho)
        if u.den is not None:
            _foreach._foreach_addcdiv_(m, u.num, u.den, value=coef)
        else:
            _foreach._foreach_add_(m, u.num, alpha=coef)
        if not self.nesterov:
            return Update(m)
        g_term = u.materialize()
        if self.form == "velocity":
            _foreach._foreach_mul_(g_term, -ctx.group["lr"])
        _foreach._foreach_add_(g_term, m, alpha=rho)
        return Update(g_term, owned=True)

    def __repr__(self) -> str:
        extra = f", schedule={self.schedule!r}" if self.schedule else ""
        return (f"first_moment({self.form!r}, nesterov={self.nesterov}, decay={self.decay!r}{extra}, "
                f"bias_correction={self.bias_correction})")


class ScaleByAdam(Part):
    """Adam's direction (Kingma & Ba 2015, Algorithm 1), both moments of the same gradient g:

        m ← β1m + (1 − β1)g,  v ← β2v + (1 − β2)g²,  u ← m̂ / (√v̂ + ε)

    with m̂ = m/(1 − β1^t), v̂ = v/(1 − β2^t) when ``bias_correction`` (the averages start at 0, so early
    estimates lean towards 0), else m and v as they are. ``nesterov=True`` takes Nesterov's look-ahead first
    moment (NAdam, Dozat 2016) and ``schedule`` names the group key ψ of its momentum schedule. ``eps`` places
    ε as in :class:`ScaleByRms`; ``b1``/``b2`` name the group keys β1 and β2 are read from.
    """

    name, first_moment, second_moment = "scale_by_adam", True, "ema"
    buffers = ("v", "m")  # this order keeps the state layout of checkpoints written before

    def __init__(self, b1: str = "beta1", b2: str = "beta2", eps: str = "outside", bias_correction: bool = True,
                 nesterov: bool = False, schedule: str | None = None):
        if schedule is not None and not nesterov:
            raise UserError("a momentum schedule needs nesterov=True (NAdam)")
        self.b1, self.b2, self.eps_placement = b1, b2, _check_eps(eps)
        self.bias_correction, self.nesterov, self.schedule = bool(bias_correction), bool(nesterov), schedule
        self.hypers = (b1, b2, "eps") + ((schedule,) if schedule else ())

    def update(self, u: Update, ctx: Context) -> Update:
        beta2, v = ctx.group[self.b2], ctx.buffers["v"]
        _accumulate_second(v, u.raw(), "ema", beta2)
        m = _ema_first(u, ctx, ctx.buffers["m"], ctx.group[self.b1], self.bias_correction, self.nesterov,
                       self.schedule)
        debias = 1.0 - beta2**ctx.step if self.bias_correction else 1.0
        return _divide_by_root(m, v, debias, ctx.group["eps"], self.eps_placement)

    def __repr__(self) -> str:
        extra = f", schedule={self.schedule!r}" if self.schedule else ""
        return (f"scale_by_adam(eps={self.eps_placement!r}, bias_correction={self.bias_correction}, "
                f"nesterov={self.nesterov}{extra})")


class AdadeltaUnits(Part):
    """Adadelta's unit correction (Zeiler 2012): multiply the update (g/√(v + ε), from
    ``scale_by_rms("ema", eps="inside")``) by the RMS of past updates, Δ = √(u_acc + ε) · g / √(v + ε),
    then u_acc ← ρ·u_acc + (1 − ρ)Δ²."""

    name = "adadelta_units"
    buffers = ("delta_sq",)
    hypers = ("rho", "eps")

    def update(self, u: Update, ctx: Context) -> Update:
        rho, eps, acc = ctx.group["rho"], ctx.group["eps"], ctx.buffers["delta_sq"]
        delta = u.materialize()
        rms = _foreach._foreach_add(acc, eps)
        _foreach._foreach_sqrt_(rms)
        _foreach._foreach_mul_(delta, rms)
        _foreach._foreach_mul_(acc, rho)
        _foreach._foreach_addcmul_(acc, delta, delta, value=1.0 - rho)
        return u


class ScaleByLr(Part):
    """Turn the direction into a step: u ← −η·u, η = group["lr"] read at every step (schedules write it)."""

    name = "scale_by_lr"
    hypers = ("lr",)
    applies_lr = True

    def update(self, u: Update, ctx: Context) -> Update:
        u.scale *= -ctx.group["lr"]
        return u


def l2_decay() -> Part:
    return L2Decay()


def decoupled_decay() -> Part:
    return DecoupledDecay()


def scale_by_rms(kind: str = "ema", decay: str = "rho", eps: str = "outside", bias_correction: bool = False) -> Part:
    return ScaleByRms(kind, decay, eps, bias_correction)


def first_moment(form: str = "heavy_ball", nesterov: bool = False, decay: str = "momentum",
                 schedule: str | None = None, bias_correction: bool = False) -> Part:
    return FirstMoment(form, nesterov, decay, schedule, bias_correction)


def scale_by_adam(b1: str = "beta1", b2: str = "beta2", eps: str = "outside", bias_correction: bool = True,
                  nesterov: bool = False, schedule: str | None = None) -> Part:
    return ScaleByAdam(b1, b2, eps, bias_correction, nesterov, schedule)


def adadelta_units() -> Part:
    return AdadeltaUnits()


def scale_by_lr() -> Part:
    return ScaleByLr()


for _fn, _cls in [(l2_decay, L2Decay), (decoupled_decay, DecoupledDecay), (scale_by_rms, ScaleByRms),
                  (first_moment, FirstMoment), (scale_by_adam, ScaleByAdam), (adadelta_units, AdadeltaUnits),
                  (scale_by_lr, ScaleByLr)]:
    _fn.__doc__ = _cls.__doc__
