"""A loaded checkpoint, checked against what this trainer expects before any of it reaches torch.

torch trusts the state it is given: an optimizer moment of the wrong shape makes its fused and foreach kernels
read and write out of bounds (a segmentation fault, not an exception), a model tensor of the wrong shape is a
``size mismatch`` traceback, a missing entry a ``KeyError``. :func:`check_state` compares the saved state with
the trainer's own (``trainer.state_dict()``, the template) and raises one :class:`CheckpointError` (exit code 2)
naming the field and the mismatch:

- ``model``: the same tensor names, shapes and dtypes. A tensor saved in another dtype (float64 for a float32
  model) is **refused, not converted**: a checkpoint resumes the run that wrote it, bit for bit, and a silent
  cast would change its numbers. To start a model of another dtype from such weights, cast the model to the
  file's dtype and use :func:`~descend.train.checkpoint.load_weights`.
- ``optimizer``: as many param_groups, each as long and with the same hyper-parameter names and JSON types, their
  learning rates, decays and momenta allowed by the recipe's constraints (:data:`HYPER_PARAMETERS`: finite, no
  negative learning rate);
  every per-parameter state belongs to a parameter of its group and holds exactly the entries one step of this
  optimizer creates (found by stepping a fresh one of its class on small zero parameters), each tensor of the
  parameter's shape and dtype (or the optimizer's scalar ``step``, or factored from the parameter's shape as
  Adafactor's).
  Optimizers that need a closure (Newton, SAM) cannot be probed; for them each tensor must have its parameter's
  shape or be a scalar.
- ``schedule``, ``callbacks``: the keys and JSON types of the live objects' ``state_dict()`` (``None`` there
  means "not known yet" and accepts a number), and the values against the option table an object declares as
  ``state_options`` (a plateau schedule's counts are >= 0). A callback's :attr:`~descend.train.callbacks.Callback.
  model_state_keys` entries hold the model's tensors (or nothing). Callbacks only the checkpoint or only this run
  has are left alone (one added or removed on resume).
- ``rng``: the streams as :func:`descend.train.rng.validated` requires, the augmentation generator's state as
  the template's; ``position``, ``base_lrs``, ``rollbacks``, ``history``, ``epoch_sums``: non-negative ints, one
  finite, non-negative base learning rate per group, a list of ``{name: number}`` rows, tensors as the template's;
  the counts agree (one history row per finished epoch, the global step made of the fit's epochs and batches, this
  run's batches per epoch).
- every tensor on the CPU or the trainer's device; model and optimizer tensors finite.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from descend.options import number
from descend.train import rng

from .codec import non_finite
from .container import CheckpointError, dtype_name, names, short

_OPTIONAL = {"checkpoints": {"best_value": None}}  # written by the Checkpoints policy, not by the trainer
_SINCE = {"speed", "scaler"}  # entries checkpoints written before the automatic speed settings lack


def check_state(saved: Any, trainer, callbacks: dict) -> None:
    """Raise :class:`CheckpointError` unless ``saved`` is a state this trainer can load (see the module doc);
    ``callbacks`` are the trainer's callbacks under the keys their state is saved by."""
    template = trainer.state_dict()
    checker = _Checker({"cpu", trainer.device.type})
    checker.keys(saved, {**template, **_OPTIONAL}, "checkpoint", optional=set(_OPTIONAL) | _SINCE)
    checker.tensors(saved["model"], template["model"], "model")
    checker.optimizer(saved["optimizer"], template["optimizer"], trainer.optimizer)
    if not (isinstance(saved["schedule"], dict) and not saved["schedule"]):  # {}: the run had no schedule state
        checker.like(saved["schedule"], template["schedule"], "schedule")
        _check_values(saved["schedule"], getattr(trainer.schedule, "state_options", ()), "schedule")
    checker.callbacks(saved["callbacks"], template["callbacks"], trainer, callbacks)
    checker.keys(saved["rng"], template["rng"], "rng")
    try:
        rng.validated(saved["rng"]["streams"])
    except CheckpointError as e:
        raise _fail("rng.streams", str(e).removeprefix("the saved random state is invalid: ")) from None
    checker.like(saved["rng"]["augment"], template["rng"]["augment"], "rng.augment")
    checker.like(saved["position"], template["position"], "position")
    for key, value in saved["position"].items():
        for count in value if isinstance(value, list) else [value]:  # fit_start is [epoch, step]
            if count < 0:
                raise _fail(f"position.{key}", f"is {value}; it counts, so it must be >= 0")
    checker.like(saved["base_lrs"], template["base_lrs"], "base_lrs")
    for i, rate in enumerate(saved["base_lrs"]):
        if not math.isfinite(rate) or rate < 0:
            raise _fail(f"base_lrs[{i}]", f"is {rate}; a learning rate is a finite number >= 0")
    checker.like(saved["rollbacks"], template["rollbacks"], "rollbacks")
    checker.history(saved["history"])
    _check_counts(saved["position"], len(saved["history"]), trainer.steps_per_epoch)
    checker.like(saved["epoch_sums"], template["epoch_sums"], "epoch_sums")
    if "checkpoints" in saved:
        checker.like(saved["checkpoints"], _OPTIONAL["checkpoints"], "checkpoints")
    for key in _SINCE:  # {}: no record (a trainer saved before its first fit), or no gradient scaling
        if key not in saved:
            continue
        if not isinstance(saved[key], dict):
            raise _fail(key, f"must be a table, got {_kind(saved[key])}")
        if saved[key] and template[key]:
            checker.like(saved[key], template[key], key)
        elif saved[key] and key == "scaler":
            raise _fail("scaler", "holds fp16 gradient-scaling state, but this run does not scale its gradients")
    _check_scaler(saved.get("scaler") or {})
    bad = non_finite(checker.finite)
    if bad:
        raise _fail(names(bad), "hold non-finite values (NaN or infinity); a descend checkpoint never does")


_SCALER = {  # torch.amp.GradScaler's state: what each value must be for the scaler to keep working
    "scale": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "growth_factor": (lambda v: math.isfinite(v) and v > 1, "a finite number > 1"),
    "backoff_factor": (lambda v: 0 < v < 1, "a number between 0 and 1"),
    "growth_interval": (lambda v: v >= 1, "an integer >= 1"),
    "_growth_tracker": (lambda v: v >= 0, "an integer >= 0"),
}


def _check_scaler(state: dict) -> None:
    """fp16's gradient-scaling state holds values a scaler can work with (its types are checked with the rest)."""
    for key, (ok, wanted) in _SCALER.items():
        if key in state and not ok(state[key]):
            raise _fail(f"scaler.{key}", f"is {short(state[key])}; it must be {wanted}")


_ACCEPTS = {  # what a JSON leaf of the template's type accepts; None means "not known yet"
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: _number(v),
    str: lambda v: isinstance(v, str),
    type(None): lambda v: v is None or _number(v) or isinstance(v, bool),
}
_WANTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "a number or None"}


def _fail(where: str, problem: str) -> CheckpointError:
    return CheckpointError(f"the checkpoint does not fit this run: {where} {problem}")


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {dtype_name(value.dtype)} tensor of shape {tuple(value.shape)}"
    return "None" if value is None else f"a {type(value).__name__} ({short(value, 40)})"


def _at(where: str, key: Any) -> str:
    return f"{where}.{key}" if isinstance(key, str) and key.isidentifier() else f"{where}[{short(key)}]"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    def __init__(self, devices: set[str]):
        self.devices = devices
        self.finite: dict[str, torch.Tensor] = {}  # model and optimizer tensors, checked together at the end

    def keys(self, saved: Any, template: dict, where: str, optional: set = frozenset()) -> None:
        """``saved`` is a dict with the template's keys (``optional`` ones may be missing), no others."""
        if not isinstance(saved, dict):
            raise _fail(where, f"must be a dict, got {_kind(saved)}")
        missing = [k for k in template if k not in saved and k not in optional]
        if missing:
            raise _fail(where, f"lacks {names([str(k) for k in missing])}")
        extra = [k for k in saved if k not in template]
        if extra:
            raise _fail(where, f"has entries this run does not keep: {names([str(k) for k in extra])}")

    def like(self, saved: Any, template: Any, where: str) -> None:
        """``saved`` has the template's structure and JSON types; tensors its shape and dtype."""
        if isinstance(template, torch.Tensor):
            self.tensor(saved, where, template.shape, template.dtype)
        elif isinstance(template, dict):
            self.keys(saved, template, where)
            for key, value in template.items():
                self.like(saved[key], value, _at(where, key))
        elif isinstance(template, (list, tuple)):
            if not isinstance(saved, (list, tuple)) or len(saved) != len(template):
                raise _fail(where, f"must be a list of {len(template)} values, got {_kind(saved)}")
            for i, (s, t) in enumerate(zip(saved, template, strict=True)):
                self.like(s, t, f"{where}[{i}]")
        else:
            accepts = _ACCEPTS.get(type(template), lambda v: type(v) is type(template))
            if not accepts(saved):
                wanted = _WANTED.get(type(template), f"of type {type(template).__name__}")
                raise _fail(where, f"must be {wanted}, got {_kind(saved)}")

    def tensor(self, saved: Any, where: str, shape: torch.Size | tuple, dtype: torch.dtype) -> None:
        if not isinstance(saved, torch.Tensor):
            raise _fail(where, f"must be a tensor, got {_kind(saved)}")
        if saved.shape != shape:
            raise _fail(where, f"has shape {tuple(saved.shape)}, this run's has shape {tuple(shape)}")
        if saved.dtype != dtype:
            raise _fail(
                where,
                f"has dtype {dtype_name(saved.dtype)}, this run's has dtype {dtype_name(dtype)} "
                "(a checkpoint is never cast: resume with the dtype it was written with)",
            )
        if saved.device.type not in self.devices:
            raise _fail(where, f"is on device {saved.device}, not on {' or '.join(sorted(self.devices))}")

    def tensors(self, saved: Any, template: dict, where: str) -> None:
        """A model state: the template's names, each tensor of its shape and dtype."""
        self.like(saved, template, where)
        self.finite.update({_at(where, k): v for k, v in saved.items()})

    def optimizer(self, saved: Any, template: dict, optimizer: torch.optim.Optimizer) -> None:
        self.keys(saved, template, "optimizer")
        groups, template_groups = saved["param_groups"], template["param_groups"]
        if not isinstance(groups, list) or len(groups) != len(template_groups):
            raise _fail(
                "optimizer.param_groups", f"must be a list of {len(template_groups)} groups, got {_kind(groups)}"
            )
        owner = {}  # saved parameter id -> (live parameter, the state one step creates for it, or None)
        probe = _probe(optimizer)
        for i, (group, expected) in enumerate(zip(groups, template_groups, strict=True)):
            where = f"optimizer.param_groups[{i}]"
            self.like(group, expected, where)
            _check_hyper(group, where)
            for j, pid in enumerate(group["params"]):
                if not isinstance(pid, int) or isinstance(pid, bool) or pid in owner:
                    raise _fail(f"{where}.params[{j}]", f"must be a parameter id used once, got {_kind(pid)}")
                param = optimizer.param_groups[i]["params"][j]
                owner[pid] = (param, probe[i][j] if probe else None)
        if not isinstance(saved["state"], dict):
            raise _fail("optimizer.state", f"must be a dict, got {_kind(saved['state'])}")
        for pid, state in saved["state"].items():
            where = f"optimizer.state[{short(pid)}]"
            if pid not in owner:
                raise _fail(where, "belongs to no parameter of optimizer.param_groups")
            self.param_state(state, *owner[pid], where)
        for i, group in enumerate(groups):  # torch's fused SGD steps a group as one: all restored or none
            trainable = [pid for pid in group["params"] if owner[pid][0].requires_grad]
            restored = [pid for pid in trainable if saved["state"].get(pid)]
            if restored and len(restored) != len(trainable):
                missing = [str(pid) for pid in trainable if pid not in restored]
                raise _fail(
                    f"optimizer.param_groups[{i}]", f"has state for some parameters but none for {names(missing)}"
                )

    def param_state(self, state: Any, param: torch.Tensor, expected: dict | None, where: str) -> None:
        if not isinstance(state, dict):
            raise _fail(where, f"must be a dict, got {_kind(state)}")
        if expected is None:  # an optimizer the probe cannot step: the shape rule alone
            expected = {k: (param if isinstance(v, torch.Tensor) and v.dim() else v) for k, v in state.items()}
        self.keys(state, expected, where)
        for key, value in expected.items():
            if isinstance(value, torch.Tensor) and value.dim():  # sized like the parameter, or factored from it
                self.tensor(state[key], _at(where, key), _sized(value, param), value.dtype)
                self.finite[_at(where, key)] = state[key]
            else:
                self.like(state[key], value, _at(where, key))

    def callbacks(self, saved: Any, template: dict, trainer, callbacks: dict) -> None:
        if not isinstance(saved, dict):
            raise _fail("callbacks", f"must be a dict, got {_kind(saved)}")
        model = trainer.model.state_dict()
        for key, callback in callbacks.items():
            if key not in saved:
                continue
            where = _at("callbacks", key)
            model_keys = set(getattr(callback, "model_state_keys", ()))
            self.keys(saved[key], template[key], where)
            for name, value in template[key].items():
                if name in model_keys:  # a copy of the model's tensors, or {} before there is one
                    if not (isinstance(saved[key][name], dict) and not saved[key][name]):
                        self.tensors(saved[key][name], model, _at(where, name))
                else:
                    self.like(saved[key][name], value, _at(where, name))
            _check_values(saved[key], getattr(callback, "state_options", ()), where)

    def history(self, saved: Any) -> None:
        if not isinstance(saved, list):
            raise _fail("history", f"must be a list of epoch rows, got {_kind(saved)}")
        for i, row in enumerate(saved):
            if not isinstance(row, dict) or not all(isinstance(k, str) and _number(v) for k, v in row.items()):
                raise _fail(f"history[{i}]", f"must map metric names to numbers, got {_kind(row)}")


# A restored hyper-parameter meets the constraint the recipe's option of that meaning has
# (descend.optim.options), under torch's group names: a file never brings a negative learning rate.
_RATE, _FRACTION = number(0), number(0, 1)
HYPER_PARAMETERS = {
    "lr": _RATE, "initial_lr": _RATE, "max_lr": _RATE, "min_lr": _RATE, "weight_decay": _RATE, "eps": _RATE,
    "lr_decay": _RATE, "momentum_decay": _RATE, "momentum": _FRACTION, "dampening": _FRACTION, "alpha": _FRACTION,
    "rho": _FRACTION, "betas": _FRACTION, "beta1": _FRACTION, "beta2": _FRACTION,
}


def _check_values(saved: dict, table, where: str) -> None:
    """A saved state's values against the option table its object declares (``state_options``): a restored value
    meets the constraint a recipe's would."""
    for option in table:
        if option.name in saved and not option.constraint.check(saved[option.name])[0]:
            raise _fail(_at(where, option.name), f"is {short(saved[option.name], 40)}; it must be {option.allowed()}")


def _check_hyper(group: dict, where: str) -> None:
    """The hyper-parameters of a saved parameter group that :data:`HYPER_PARAMETERS` names, each allowed by its
    constraint (a pair such as Adam's ``betas`` item by item). Other entries are the optimizer's own (an
    optimizer may keep an infinite growth rate, say) and keep the type check alone."""
    for key, constraint in HYPER_PARAMETERS.items():
        value = group.get(key)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if _number(v) and not constraint.check(v)[0]:
                raise _fail(_at(where, key), f"is {short(value, 40)}; it must be {constraint.allowed()}, as in a "
                            "recipe")


def _check_counts(position: dict, rows: int, steps_per_epoch: int) -> None:
    """The counts of ``position`` agree with each other, with the history and with this run's batches per epoch:
    one finished epoch, one history row; the steps of this fit are its whole epochs and the batches of the current
    one. A file whose counts disagree would resume at a place no run reaches (and a huge one would overflow)."""
    epoch, index, step, per = (position[k] for k in ("epoch", "batch_index", "global_step", "steps_per_epoch"))
    start_epoch, start_step = position["fit_start"]
    if per != steps_per_epoch:
        raise _fail("position.steps_per_epoch", f"is {per}, this run has {steps_per_epoch} batches per epoch: the "
                    "data, batch_size and drop_last must stay the same")
    if index > per:
        raise _fail("position.batch_index", f"is {index}, past the {per} batches of an epoch")
    if start_epoch > epoch or start_step > step:
        raise _fail("position.fit_start", f"is {[start_epoch, start_step]}, after the position itself "
                    f"(epoch {epoch}, step {step})")
    expected = start_step + (epoch - start_epoch) * per + index
    if step != expected:
        raise _fail("position.global_step", f"is {step}, but epoch {epoch}, batch {index} and fit_start "
                    f"{[start_epoch, start_step]} make it {expected}")
    if rows != epoch:
        raise _fail("history", f"has {rows} epoch rows, but position.epoch says {epoch} epochs finished")


_PROBE = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)  # the probe parameters' sizes, one prime per axis


def _sized(probed: torch.Tensor, param: torch.Tensor) -> torch.Size:
    """The shape a state tensor must have for ``param``, from the probe's: an axis as long as the probe
    parameter's is the parameter's (Adam's moments: the parameter's shape; Adafactor's factors (2, 1) and (1, 3) of a
    (2, 3) probe: (rows, 1) and (1, columns))."""
    if probed.dim() != param.dim():
        return param.shape
    return torch.Size(param.shape[i] if n == _PROBE[i] else n for i, n in enumerate(probed.shape))


def _probe(optimizer: torch.optim.Optimizer) -> list[list[dict]] | None:
    """The per-parameter state one step of ``optimizer`` creates, per group and parameter. A fresh optimizer of
    the same class is built as any is (no state, no hooks): called with stand-in groups (each group's
    hyper-parameters, small zero parameters of each parameter's dtype, device and number of dimensions
    (:data:`_PROBE`) with zero gradients) and :func:`_arguments`; it steps once and :func:`_sized` maps the state's
    shapes back to the parameters'. An optimizer that needs a closure, or that cannot be built this way or step
    the stand-ins (TypeError, ValueError, RuntimeError), is not probed: the shape rule alone applies to it."""
    if getattr(optimizer, "needs_closure", False):
        return None
    stand_ins = []
    for group in optimizer.param_groups:
        params = [
            torch.zeros(_PROBE[: max(p.dim(), 1)], dtype=p.dtype, device=p.device, requires_grad=p.is_floating_point())
            for p in group["params"]
        ]
        for p in params:
            p.grad = torch.zeros_like(p)
        stand_ins.append(params)
    groups = [{**g, "params": ps} for g, ps in zip(optimizer.param_groups, stand_ins, strict=True)]
    try:
        probe = type(optimizer)(groups, **_arguments(optimizer))
        probe.step()
    except (TypeError, ValueError, RuntimeError):
        return None
    return [[dict(probe.state[p]) for p in params] for params in stand_ins]


def _arguments(optimizer: torch.optim.Optimizer) -> dict:
    """The keyword arguments that build a copy of ``optimizer``: its ``defaults`` (what torch's optimizers are
    built from), and for a constructor argument that is not among them (the ``chain`` of descend's composed
    optimizers) the optimizer's attribute of that name."""
    parameters = list(inspect.signature(type(optimizer)).parameters.values())[1:]  # after the params
    named = {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in parameters)
    arguments = {k: v for k, v in optimizer.defaults.items() if k in named or open_ended}
    for name in named - set(arguments):
        if hasattr(optimizer, name):
            arguments[name] = getattr(optimizer, name)
    return arguments
