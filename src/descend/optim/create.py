"""``descend.optim.create``: a named optimizer, validated, on torch's fastest kernel when one exists."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from descend.errors import UserError
from descend.optim import named, standalone, wrappers
from descend.optim.groups import param_groups
from descend.optim.newton import Newton
from descend.optim.options import OPTIONS, WRAPPED, canonical_name, validate


@dataclass(frozen=True)
class OptimizerSpec:
    """A validated optimizer request not yet bound to parameters: ``spec.build(model)`` binds it.

    ``options`` is a JSON-able dict of every option with defaults filled in (``lr`` included).
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, params: Any) -> torch.optim.Optimizer:
        return create(self.name, params, **self.options)


def create(name: str, params: Any = None, /, **hyper: Any) -> torch.optim.Optimizer | OptimizerSpec:
    """The optimizer ``name`` over ``params`` with options ``hyper`` (see :mod:`descend.optim.options`).

    ``name`` is one of gd (alias sgd), momentum, nesterov, adagrad, rmsprop, adadelta, adam, adamw, nadam,
    newton, lion, muon, adafactor, schedule_free_sgd, schedule_free_adamw, prodigy, dadapt_sgd, sam (SGD with
    momentum taking SAM steps) and lookahead (Adam inside Lookahead); ``sam_rho > 0`` and ``lookahead_k > 0``
    put SAM and Lookahead around any first-order optimizer (:mod:`descend.optim.wrappers`). ``params`` is an
    ``nn.Module`` (names known: ``exclude_from_decay`` patterns apply), tensors, or param-group dicts; with
    ``params=None`` the options are validated and an :class:`OptimizerSpec` returned.

    With ``implementation="auto"`` (default) the result is torch's own optimizer (fused or foreach kernels)
    when the request is exactly a torch algorithm, else a :class:`~descend.optim.ComposedOptimizer` of the
    descend's parts; ``"torch"`` insists on torch's (error otherwise), ``"composed"`` on descend's.
    """
    name = canonical_name(name)
    options = validate(name, hyper)
    if params is None and (name == "newton" or name in standalone.BUILDERS or name in standalone.NEEDS_MODULE):
        return OptimizerSpec(name, options)
    if name in standalone.BUILDERS or name in standalone.NEEDS_MODULE:
        return _wrapped(standalone.build(name, params, options), options)
    spec_or_optimizer = _create(WRAPPED.get(name, name), params, options)
    if params is None:
        return OptimizerSpec(name, options)
    return _wrapped(spec_or_optimizer, options)


def _wrapped(optimizer: torch.optim.Optimizer, options: dict[str, Any]) -> torch.optim.Optimizer:
    """``optimizer`` with SAM steps and inside Lookahead when its options ask for them."""
    if options.get("sam_rho"):
        optimizer = wrappers.sam(optimizer, options["sam_rho"])
    if options.get("lookahead_k"):
        optimizer = wrappers.lookahead(optimizer, options["lookahead_k"], options["lookahead_alpha"])
    return optimizer


def _create(key: str, params: Any, options: dict[str, Any]) -> torch.optim.Optimizer | None:
    """One of the classic optimizers (a chain of parts, torch's kernel where exact, or Newton); None without params."""
    native = named.torch_equivalent(key, options) if key != "newton" else None
    if options.get("implementation") == "torch" and native is None:
        raise UserError(f"optimizer {key!r} with these options is not a torch algorithm "
                        f"(implementation='torch' is allowed only then); use implementation='auto'")
    if params is None:
        return None
    groups = param_groups(params, options["weight_decay"], options["exclude_from_decay"])
    if key == "newton":
        return Newton(groups, lr=options["lr"], damping=options["damping"], max_params=options["max_params"],
                      weight_decay=options["weight_decay"], weight_decay_mode=options["weight_decay_mode"])
    if native is not None and options["implementation"] == "auto" and _loses_precision(native[0], groups):
        native = None
    if native is not None and options["implementation"] != "composed":
        cls, kwargs = native
        return named.build_torch(cls, kwargs, groups)
    return named.build_composed(key, options, groups)


def _loses_precision(cls: type, groups: list[dict[str, Any]]) -> bool:
    """torch's NAdam keeps its μ-product in the default dtype (float32): on float64 weights that costs
    ~1e-10 relative after 50 steps, so float64 NAdam runs composed (exact in float64)."""
    return cls is torch.optim.NAdam and torch.get_default_dtype() != torch.float64 and any(
        p.dtype == torch.float64 for g in groups for p in g["params"])


def names() -> list[str]:
    """Every optimizer name ``create`` accepts (aliases excluded)."""
    return list(OPTIONS)
