"""Weight averaging: an exponential moving average of the weights (EMA, Polyak averaging) or stochastic weight
averaging (SWA), with an explicit batch-norm policy and a choice of which weights validation judges.

EMA (Polyak & Juditsky 1992, in its exponential form): every ``every`` optimizer steps ::

    w̄ ← d_t·w̄ + (1 − d_t)·w,     d_t = d                                  (warmup off)
                                  d_t = min(d, 1 − (1 + t/γ)^(−p))         (warmup on; timm's ModelEmaV3)

with t the number of updates so far. SWA (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and
Better Generalization"): the equal-weight mean of the weights at the end of every epoch from ``first_epoch`` on,
w̄ = 1/n Σ_i w_i, optionally with its own learning rate (``swa_lr``, reached by a cosine anneal over
``anneal_epochs``, as torch's ``SWALR``). The engine is torch's ``torch.optim.swa_utils``: ``AveragedModel``
holds the average, ``update_bn`` recomputes batch-norm statistics. Both start from the weights of their first
update (``AveragedModel`` copies them), not from the initialisation.

Batch norm (``batch_norm``): an average of weights is a network whose activations nobody has measured, so its
running statistics are a choice. ``"recompute"`` runs one pass over the training data with the averaged weights
(``update_bn``; SWA's own recipe), ``"average"`` uses the averaged running statistics, ``"keep"`` the raw
model's. Default: recompute for SWA, average for EMA. The choice applies to every validation pass and to the
final weights, so validation never judges statistics that the deployed model would not have.

Which weights count (``evaluate_with``): ``"average"`` validates the averaged weights (logged as ``val_*`` and
``val_avg_*``; early stopping, best checkpoints and plateau schedules follow them; the final weights are the
average, or early stopping's best average); ``"raw"`` validates and keeps the raw weights (the average is kept
aside, :meth:`WeightAveraging.averaged_state`); ``"both"`` validates both (raw as ``val_*``, average as
``val_avg_*``; early stopping follows whichever its monitor names) and ends with the average installed.
Everything (average, update count) is in the callback's state, so a resumed run ends bit-identical.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, update_bn

from .errors import UserError
from .options import Boolean, OneOf, Option, Optional, declare, integer, number, validate
from .train import epochs
from .train.callbacks import Callback, EarlyStopping
from .train.optimizer_events import switches

__all__ = ["METHODS", "OPTIONS", "BATCH_NORM", "EVALUATE_WITH", "WeightAveraging", "EMA", "SWA", "SWALearningRate",
           "create", "recompute_batch_norm"]

METHODS = ("ema", "swa")
BATCH_NORM = ("recompute", "average", "keep")
EVALUATE_WITH = ("average", "raw", "both")
SWA_START_FRACTION = 0.75  # Izmailov et al. 2018 start averaging after 75% of the training budget


def recompute_batch_norm(trainer, model: torch.nn.Module | None = None) -> None:
    """Batch-norm running statistics of ``model`` (default: the trainer's) from one pass over the training data.

    torch's ``update_bn`` (cumulative average over the batches, dropout active as in training), under a forked
    RNG so that the pass leaves the training's random streams untouched.
    """
    model = model if model is not None else trainer.model
    devices = [trainer.device.index or 0] if trainer.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        update_bn(trainer.train_batches(), model)


class SWALearningRate:
    """A schedule that follows ``inner`` until ``start_step``, then anneals (cosine) to ``swa_lr`` over
    ``anneal_steps`` steps and stays there; every parameter group goes to ``swa_lr``, as with torch's ``SWALR``.

    A pure function of the step, so a resumed run needs no extra state; ``bind``, ``observe`` and the state are
    the inner schedule's.
    """

    def __init__(self, inner, start_step: int, swa_lr: float, anneal_steps: int):
        self.inner, self.start_step, self.swa_lr, self.anneal_steps = inner, start_step, swa_lr, max(anneal_steps, 1)

    def _inner_lr(self, base_lr: float, step: int) -> float:
        return base_lr if self.inner is None else self.inner.lr(base_lr, step)

    def lr(self, base_lr: float, step: int) -> float:
        if step < self.start_step:
            return self._inner_lr(base_lr, step)
        t = min(1.0, (step - self.start_step) / self.anneal_steps)
        alpha = (1 - math.cos(math.pi * t)) / 2
        return self.swa_lr * alpha + self._inner_lr(base_lr, self.start_step) * (1 - alpha)

    def bind(self, steps_per_epoch: int, total_steps: int) -> None:
        if self.inner is not None:
            self.inner.bind(steps_per_epoch, total_steps)

    def observe(self, logs: dict[str, float]) -> None:
        if self.inner is not None:
            self.inner.observe(logs)

    def state_dict(self) -> dict:
        return self.inner.state_dict() if self.inner is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.inner is not None:
            self.inner.load_state_dict(state)


class WeightAveraging(Callback):
    """EMA or SWA of the model's weights as a callback (see the module's text for the rules and sources).

    ``method`` ∈ ema, swa. EMA: ``decay`` d ∈ [0, 1), ``every`` steps, ``warmup`` (with ``warmup_gamma`` γ > 0
    and ``warmup_power`` p > 0). SWA: ``first_epoch`` (the first averaged epoch, counted from 1 like every epoch
    number in descend; default: the epoch after 75% of the epochs), ``swa_lr`` (None: the recipe's schedule goes
    on), ``anneal_epochs``; the deprecated ``start_epoch`` counted from 0 and keeps that meaning
    (:mod:`descend.train.epochs`). Both: ``batch_norm`` ∈ recompute, average, keep (None: the
    method's default), ``evaluate_with`` ∈ average, raw, both.
    """

    order = 50  # after early stopping (0), which then keeps the weights validation judged; before logs and checkpoints
    model_state_keys = ("averaged",)  # a copy of the model's tensors, checked against the model on resume

    @declare("averaging",
             Option("method", OneOf(*METHODS), doc="ema (Polyak averaging) or swa (stochastic weight averaging)"),
             Option("decay", number(0, 1, closed="left"), doc="EMA: d in w̄ ← d·w̄ + (1 − d)·w"),
             Option("every", integer(1), doc="EMA: update the average every this many optimizer steps"),
             Option("warmup", Boolean(), doc="EMA: d_t = min(d, 1 − (1 + t/γ)^−p) (timm's ModelEmaV3)"),
             Option("warmup_gamma", number(0, closed="right"), doc="EMA warmup: γ"),
             Option("warmup_power", number(0, closed="right"), doc="EMA warmup: p"),
             epochs.first_epoch_option("SWA: the first averaged epoch (from 1, inclusive)",
                                       "the epoch after 75% of the epochs"),
             epochs.deprecated_option("start_epoch", "SWA's first averaged epoch counted from 0"),
             Option("swa_lr", Optional(number(0, closed="right"), "the recipe's schedule"),
                    doc="SWA: the learning rate from first_epoch on (cosine anneal, as torch's SWALR)"),
             Option("anneal_epochs", number(0), doc="SWA: epochs of the anneal to swa_lr"),
             Option("batch_norm", Optional(OneOf(*BATCH_NORM), "recompute for swa, average for ema"),
                    doc="statistics of the averaged weights"),
             Option("evaluate_with", OneOf(*EVALUATE_WITH), doc="the weights validation judges and the run keeps"))
    def __init__(self, method: str = "ema", *, decay: float = 0.999, every: int = 1, warmup: bool = False,
                 warmup_gamma: float = 1.0, warmup_power: float = 2 / 3, first_epoch: int | None = None,
                 start_epoch: int | None = None, swa_lr: float | None = None, anneal_epochs: float = 1.0,
                 batch_norm: str | None = None, evaluate_with: str = "average"):
        self.method, self.decay, self.every, self.warmup = method, decay, every, warmup
        self.warmup_gamma, self.warmup_power = warmup_gamma, warmup_power
        if method == "ema" and (first_epoch is not None or start_epoch is not None or swa_lr is not None):
            raise UserError("averaging: first_epoch and swa_lr belong to SWA (name = 'swa'); EMA averages from the "
                            "first step (use warmup for a slow start)")
        self.first_epoch = epochs.first_epoch("averaging", first_epoch, "start_epoch", start_epoch,
                                              meaning="averages from")
        self.swa_lr, self.anneal_epochs = swa_lr, anneal_epochs
        default_bn = "recompute" if method == "swa" else "average"
        self.batch_norm = batch_norm if batch_norm is not None else default_bn
        self.evaluate_with = evaluate_with
        self.averaged: AveragedModel | None = None
        self.updates = 0          # updates of the average so far (t in the warmup formula)
        self._raw: dict | None = None
        self._swapped = False
        self._judged = False      # validation has judged averaged weights in this fit
        self._pending: dict | None = None
        self._start = 0           # SWA's first averaged epoch, 0-based like trainer.epoch (resolved at fit start)

    # ------------------------------------------------------------------ the average
    def decay_at(self, t: int) -> float:
        """d_t: the EMA decay for update number ``t`` (0-based)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, 1 - (1 + t / self.warmup_gamma) ** -self.warmup_power)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights (and buffers) into the average: the first update copies them, later
        ones make w̄ ← w̄ + a·(w − w̄) with a = 1/(n + 1) (SWA) or 1 − d_t (EMA) for floating tensors, and copy
        integer buffers (batch norm's step count).

        No host sync: the update count is a Python integer. (``AveragedModel.update_parameters`` reads its device
        counter ``n_averaged`` on the host twice per call, which would stall an EMA updated every step.)"""
        weight = 1 / (self.updates + 1) if self.method == "swa" else 1 - self.decay_at(self.updates)
        averaged = [*self.averaged.module.parameters(), *self.averaged.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        if self.updates == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [(a, w) for a, w in zip(averaged, current, strict=True) if a.is_floating_point()]
            others = [(a, w) for a, w in zip(averaged, current, strict=True) if not a.is_floating_point()]
            if floats:
                torch._foreach_lerp_(*map(list, zip(*floats)), weight)
            if others:
                torch._foreach_copy_(*map(list, zip(*others)))
        self.averaged.n_averaged += 1  # torch's counter kept in step (a device add, no sync)
        self.updates += 1

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers, keyed like the model's ``state_dict``."""
        return self.averaged.module.state_dict()

    def install(self, trainer) -> None:
        """Put the averaged weights into the trainer's model, batch-norm statistics as ``batch_norm`` says."""
        model, source = trainer.model, self.averaged.module
        with torch.no_grad():
            for p, a in zip(model.parameters(), source.parameters(), strict=True):
                p.copy_(a)
            if self.batch_norm == "average":
                for b, a in zip(model.buffers(), source.buffers(), strict=True):
                    b.copy_(a)
        if self.batch_norm == "recompute":
            recompute_batch_norm(trainer)

    # ------------------------------------------------------------------ events
    def setup(self, trainer, logged: set[str]) -> None:
        if switches(trainer.optimizer):  # a schedule-free optimizer's train and eval weights
            raise UserError(f"{type(self).__name__}: {type(trainer.optimizer).__name__} is schedule-free and already "
                            "evaluates an average of its iterates; use a schedule-free optimizer or weight averaging")
        if self.evaluate_with != "raw":  # the averaged weights' validation values join the logs
            logged.update({f"val_avg_{name.removeprefix('val_')}" for name in logged if name.startswith("val_")})

    def on_fit_start(self, trainer) -> None:
        self.averaged = AveragedModel(trainer.model, use_buffers=True)  # holds the average; update() folds in
        self.updates, self._raw, self._swapped, self._judged = 0, None, False, False
        if self._pending is not None:
            self._apply(self._pending)
        total = trainer.total_steps // trainer.steps_per_epoch
        first = self.first_epoch if self.first_epoch is not None else int(SWA_START_FRACTION * total) + 1
        epochs.warn_if_after_last("SWA", self.first_epoch, total, f"only epoch {total} is averaged")
        self._start = min(first, total) - 1  # at the latest the last epoch is averaged
        if self.method == "swa" and self.swa_lr is not None:
            trainer.schedule = SWALearningRate(trainer.schedule, self._start * trainer.steps_per_epoch,
                                               self.swa_lr, round(self.anneal_epochs * trainer.steps_per_epoch))

    def on_batch_end(self, trainer) -> None:
        if self.method == "ema":
            if trainer.global_step % self.every == 0:
                self.update(trainer.model)
        elif trainer.batch_index == trainer.steps_per_epoch and trainer.epoch >= self._start:
            self.update(trainer.model)  # SWA: the weights at the end of each epoch

    def on_validation_start(self, trainer) -> None:
        if self.evaluate_with == "average" and self.updates:
            self._swap_in(trainer)
            self._judged = True  # early stopping now sees (and keeps) averaged weights

    def on_validation_end(self, trainer, logs: dict[str, float]) -> None:
        if self.evaluate_with == "raw":
            return
        if self.evaluate_with == "both" and self.updates:
            self._swap_in(trainer)
            averaged = trainer.evaluate(trainer.val_data, prefix="val_")
            self._swap_out(trainer)
        else:  # "average" (this pass judged the average), or nothing averaged yet: the average is the model
            averaged = dict(logs)
        logs.update({f"val_avg_{key.removeprefix('val_')}": value for key, value in averaged.items()})

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        if self._swapped:  # early stopping (order 0) has seen the averaged weights; training goes on with the raw
            self._swap_out(trainer)

    def on_fit_end(self, trainer) -> None:
        if isinstance(trainer.schedule, SWALearningRate):
            trainer.schedule = trainer.schedule.inner
        self._pending = None
        if self.evaluate_with == "raw" or not self.updates:
            return
        restored = any(isinstance(cb, EarlyStopping) and cb.restore_best and cb.best_weights is not None
                       for cb in trainer.callbacks)
        if self.evaluate_with == "average" and restored and self._judged:
            return  # early stopping put back the best averaged weights (it kept them with our statistics)
        self.install(trainer)

    # ------------------------------------------------------------------ swapping
    def _swap_in(self, trainer) -> None:
        state = trainer.model.state_dict()
        if self._raw is None:
            self._raw = {name: t.detach().clone() for name, t in state.items()}
        else:
            for name, t in state.items():
                self._raw[name].copy_(t)
        self._swapped = True
        self.install(trainer)

    def _swap_out(self, trainer) -> None:
        trainer.model.load_state_dict(self._raw)
        self._swapped = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The method, the update count and the averaged weights and buffers (keyed as the model's)."""
        averaged = self.averaged.module.state_dict() if self.averaged is not None else {}
        return {"method": self.method, "updates": self.updates, "averaged": averaged}

    def load_state_dict(self, state: dict) -> None:
        if state["method"] != self.method:
            raise UserError(f"averaging: the saved state is {state['method']!r} averaging, this run asks for "
                            f"{self.method!r}; resume with the same method")
        self._pending = state  # applied at fit start (resume), or now (a divergence rollback mid-fit)
        if self.averaged is not None:
            self._apply(state)

    def _apply(self, state: dict) -> None:
        self.updates = int(state["updates"])
        if state["averaged"]:
            self.averaged.module.load_state_dict(state["averaged"])
        self.averaged.n_averaged.fill_(self.updates)


class EMA(WeightAveraging):
    """Exponential moving average of the weights: ``EMA(0.999)``; see :class:`WeightAveraging`."""

    def __init__(self, decay: float = 0.999, **options):
        super().__init__("ema", decay=decay, **options)


class SWA(WeightAveraging):
    """Stochastic weight averaging: ``SWA(first_epoch=31, swa_lr=0.05)`` averages epochs 31, 32, …; see
    :class:`WeightAveraging`."""

    def __init__(self, first_epoch: int | None = None, **options):
        super().__init__("swa", first_epoch=first_epoch, **options)


#: ``[averaging]``: ``name`` picks the method (``method`` of :class:`WeightAveraging`); the rest are its options.
OPTIONS = (Option("name", OneOf(*METHODS), "ema", "ema (Polyak averaging) or swa (stochastic weight averaging)"),
           *(o for o in WeightAveraging.__init__.options if o.name != "method"))


def create(name: str = "ema", **options) -> WeightAveraging:
    """The averaging callback a recipe's ``[averaging]`` section describes: ``name`` (ema or swa) and the options of
    :class:`WeightAveraging`, checked against :data:`OPTIONS`."""
    values = validate("averaging", OPTIONS, {"name": name, **options})
    return WeightAveraging(values["name"], **{k: values[k] for k in options})
