"""Weight penalties added to the data loss, and proximal L1.

The loss the optimizer sees is the data loss plus the regularization term::

    L(W) = 1/N Σ_i L_i(f(x_i, W), y_i) + R(W)

The trainer adds :meth:`Regularizer.penalty` to the data loss every step and logs the two separately. The
penalties, each over the *selected* parameters w (weights by default, see :meth:`Regularizer.selects`):

=============== ============================== ==========================================================
kind            R(w)                           gradient
=============== ============================== ==========================================================
``l1``          λ Σ|w|                         λ sgn(w)                       (lasso, Tibshirani 1996)
``l2``          λ/2 Σw²  (``convention="half"``) λ w  → w ← (1 − ηλ) w − η ∇J  (ridge, Hoerl & Kennard 1970)
                λ Σw²    (``convention="full"``) 2λ w
``elastic_net`` λ₁ Σ|w| + λ₂ Σw²               λ₁ sgn(w) + 2 λ₂ w             (Zou & Hastie 2005)
``lp``          λ Σ|w|ᵖ, p > 0                 λ p |w|ᵖ⁻¹ sgn(w) (0 at w = 0) (bridge, Frank & Friedman 1993)
``proximal_l1`` λ Σ|w|, applied as a step      after each optimizer step: w ← sgn(w) max(|w| − ηλ, 0)
=============== ============================== ==========================================================

``l1`` through a (sub)gradient only makes weights oscillate around zero; ``proximal_l1`` soft-thresholds after
each step (proximal gradient descent, ISTA), which sets small weights to exactly zero, so L1's sparsity (of
correlated features, L1 keeps a few and L2 spreads the weight over all) shows in :meth:`Regularizer.sparsity`.
With plain SGD it is the exact proximal step of λΣ|w| for step size η; with other optimizers the threshold ηλ
uses the scheduled learning rate as the step size.
"""

from __future__ import annotations

import fnmatch
import warnings
import weakref
from collections.abc import Iterable

import torch
from torch import nn

from descend.options import OneOf, Option, Optional, Patterns, number, validate
from descend.options import describe as describe_table

__all__ = ["KINDS", "Regularizer", "Penalty", "ProximalL1", "NORM_LAYERS", "create", "describe"]

#: Module types whose parameters (γ, β) are never penalised by default: like biases, which are usually left
#: unpenalised (Goodfellow, Bengio & Courville 2016, §7.1), normalisation scales and shifts are not weights of
#: a connection.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm (affine)
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


class Regularizer:
    """Base class: parameter selection, caching and sparsity; subclasses give the penalty or the step.

    Selection (:meth:`selects`): by default every parameter except biases (parameters named ``bias``) and the
    parameters of normalisation layers (:data:`NORM_LAYERS`, found by module type). ``include`` (fnmatch
    patterns on full parameter names such as ``"0.weight"`` or ``"encoder.*"``) replaces that default: exactly
    the matching parameters are candidates. ``exclude`` patterns then remove matches.
    """

    kind = "?"

    def __init__(self, include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> None:
        self.include = None if include is None else tuple(include)
        self.exclude = tuple(exclude)
        self._cache: weakref.WeakKeyDictionary[nn.Module, list[tuple[str, str, nn.Parameter]]] = (
            weakref.WeakKeyDictionary()
        )

    # -- selection -------------------------------------------------------------------------------------------
    def selects(self, name: str, param: nn.Parameter, module: nn.Module) -> bool:
        """Whether parameter ``name`` (full dotted name), owned directly by ``module``, is regularised."""
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude):
            return False
        if self.include is not None:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)
        return name.rsplit(".", 1)[-1] != "bias" and not isinstance(module, NORM_LAYERS)

    def selected(self, model: nn.Module) -> list[tuple[str, str, nn.Parameter]]:
        """``(module name, parameter name, parameter)`` for every selected parameter; cached per model."""
        entries = self._cache.get(model)
        if entries is None:
            entries, seen = [], set()
            for module_name, module in model.named_modules():
                for local, param in module.named_parameters(recurse=False):
                    name = f"{module_name}.{local}" if module_name else local
                    if id(param) not in seen and self.selects(name, param, module):
                        seen.add(id(param))
                        entries.append((module_name, name, param))
            self._cache[model] = entries
        return entries

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        """The selected parameters that are trained now (frozen ones, e.g. in transfer learning, stay)."""
        return [param for _, _, param in self.selected(model) if param.requires_grad]

    # -- what the trainer calls ------------------------------------------------------------------------------
    def penalty(self, model: nn.Module) -> torch.Tensor:
        """R(w) as a 0-dim tensor on the model's device (no host sync); zero when nothing is selected."""
        params = self._params(model)
        if not params:
            return torch.zeros((), device=_device_of(model))
        return self._penalty(params)

    def _penalty(self, params: list[nn.Parameter]) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, model: nn.Module, lr: float) -> None:
        """Called after each optimizer step with the step's learning rate; a no-op for penalties."""

    @torch.no_grad()
    def sparsity(self, model: nn.Module) -> dict[str, float]:
        """Fraction of exactly-zero selected weights per layer (module name; ``""`` for the model itself)."""
        zeros: dict[str, list[torch.Tensor]] = {}
        sizes: dict[str, int] = {}
        for module_name, _, param in self.selected(model):
            zeros.setdefault(module_name, []).append((param == 0).sum())
            sizes[module_name] = sizes.get(module_name, 0) + param.numel()
        if not zeros:
            return {}
        counts = torch.stack([torch.stack(c).sum().cpu() for c in zeros.values()]).tolist()  # one sync
        return {name: count / sizes[name] for name, count in zip(zeros, counts, strict=True)}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self._options().items())
        return f"{type(self).__name__}({options})"

    def _options(self) -> dict:
        return {"include": self.include, "exclude": self.exclude}


class Penalty(Regularizer):
    """R(w) = l1·Σ|w| + l2·Σw² + lp·Σ|w|ᵖ: one class for ``l1``, ``l2``, ``elastic_net`` and ``lp``.

    Each term with a zero coefficient is skipped. ``l2`` with the λ/2 convention is built with
    ``l2 = λ/2`` (see :func:`create`).
    """

    def __init__(self, kind: str, l1: float = 0.0, l2: float = 0.0, lp: float = 0.0, p: float = 2.0,
                 include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> None:
        super().__init__(include, exclude)
        self.kind, self.l1, self.l2, self.lp, self.p = kind, l1, l2, lp, p

    def _penalty(self, params: list[nn.Parameter]) -> torch.Tensor:
        total = params[0].new_zeros(())
        if self.l1:
            total = total + self.l1 * torch.stack([p.abs().sum() for p in params]).sum()
        if self.l2:
            total = total + self.l2 * torch.stack([p.square().sum() for p in params]).sum()
        if self.lp:
            total = total + self.lp * torch.stack([_abs_pow(p, self.p).sum() for p in params]).sum()
        return total

    def _options(self) -> dict:
        terms = {"kind": self.kind, "l1": self.l1, "l2": self.l2, "lp": self.lp, "p": self.p}
        return {**terms, **super()._options()}


class ProximalL1(Regularizer):
    """L1 by soft-thresholding after each step: w ← sgn(w)·max(|w| − ηλ, 0) = w − clamp(w, −ηλ, ηλ).

    The penalty added to the loss is zero; weights with |w| ≤ ηλ become exactly 0.
    """

    kind = "proximal_l1"

    def __init__(self, strength: float, include: Iterable[str] | None = None, exclude: Iterable[str] = ()):
        super().__init__(include, exclude)
        self.strength = strength

    def penalty(self, model: nn.Module) -> torch.Tensor:
        params = self._params(model)
        return torch.zeros((), device=params[0].device if params else _device_of(model))

    @torch.no_grad()
    def after_step(self, model: nn.Module, lr: float) -> None:
        params = self._params(model)
        threshold = float(lr) * self.strength
        if not params or threshold <= 0:
            return
        clipped = torch._foreach_clamp_min(params, -threshold)
        torch._foreach_clamp_max_(clipped, threshold)
        torch._foreach_sub_(params, clipped)  # |w| ≤ t: w − w = 0 exactly; else w ∓ t

    def _options(self) -> dict:
        return {"strength": self.strength, **super()._options()}


def _abs_pow(w: torch.Tensor, p: float) -> torch.Tensor:
    """|w|ᵖ with gradient p|w|ᵖ⁻¹sgn(w) and gradient 0 at w = 0 (finite also for p < 1)."""
    nonzero = w != 0
    safe = torch.where(nonzero, w.abs(), torch.ones_like(w))
    return torch.where(nonzero, safe.pow(p), torch.zeros_like(w))


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


# -- construction from the [regularization] config section ---------------------------------------------------

_SELECTION = (
    Option("include", Optional(Patterns(), "none (every weight: biases and normalisation layers left out)"), None,
           "only the parameters whose names match are regularised"),
    Option("exclude", Patterns(), [], "parameters whose names match are never regularised"),
)
_STRENGTH = Option("strength", number(0), 1e-4, "λ, the coefficient of the penalty")
#: The options of each kind, with their defaults.
KINDS: dict[str, tuple[Option, ...]] = {
    "l1": (_STRENGTH, *_SELECTION),
    "l2": (_STRENGTH, Option("convention", OneOf("half", "full"), "half", "half: λ/2·Σw² (gradient λw); "
                             "full: λ·Σw² (gradient 2λw)"), *_SELECTION),
    "elastic_net": (Option("l1_strength", number(0), 1e-4, "λ₁ of λ₁Σ|w|"),
                    Option("l2_strength", number(0), 1e-4, "λ₂ of λ₂Σw²"), *_SELECTION),
    "lp": (_STRENGTH, Option("p", number(0, closed="right"), doc="the exponent p of λΣ|w|ᵖ"), *_SELECTION),
    "proximal_l1": (_STRENGTH, *_SELECTION),
}
#: ``[regularization] name``: which penalty.
NAME = Option("name", OneOf(*KINDS), doc="the penalty")


def create(name: str, **options) -> Regularizer:
    """Build a regularizer from the ``[regularization]`` config section.

    ``name``: ``l1`` | ``l2`` | ``elastic_net`` | ``lp`` | ``proximal_l1``; its options are in :data:`KINDS`
    (:func:`describe` lists them; an option given as ``None`` means its default). ``convention`` for ``l2``:
    ``"half"`` for λ/2·Σw², whose gradient λw makes L2 + SGD the weight decay w ← (1 − ηλ)w − η∇J, or ``"full"``
    for λ·Σw² with gradient 2λw. ``p`` < 1 for ``lp`` warns that the penalty is non-convex. ``include`` and
    ``exclude``: see :meth:`Regularizer.selects`.
    """
    kind = NAME.check("regularization", name)
    where = f"regularization {kind!r}"
    values = validate(where, KINDS[kind], {k: v for k, v in options.items() if v is not None})
    selection = {"include": values["include"], "exclude": values["exclude"]}
    if kind == "elastic_net":
        return Penalty(kind, l1=values["l1_strength"], l2=values["l2_strength"], **selection)
    strength = values["strength"]
    if kind == "l1":
        return Penalty(kind, l1=strength, **selection)
    if kind == "l2":
        return Penalty(kind, l2=strength / 2 if values["convention"] == "half" else strength, **selection)
    if kind == "lp":
        p = values["p"]
        if p < 1:
            warnings.warn(f"lp regularization with p = {p} < 1 is non-convex: the optimum depends on the "
                          "initialisation and the gradient is unbounded near w = 0",
                          UserWarning, stacklevel=2)
        return Penalty(kind, lp=strength, p=p, **selection)
    return ProximalL1(strength, **selection)


def describe() -> str:
    """Every regularization kind's options as text."""
    return "\n".join(describe_table(table, f"regularization {kind!r}") for kind, table in KINDS.items())
