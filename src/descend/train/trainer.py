"""The one training loop.

Epochs over in-memory batches: forward, loss (+ penalty), backward, (clip), optimizer step, with the callback
events of :mod:`descend.train.callbacks` around it and a validation pass under ``torch.inference_mode()`` after
every epoch. Losses and metrics stay on the device and are read once per epoch or every ``log_every`` steps;
the step itself never waits for the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import optim
from ..data import Batches, Split
from ..errors import DivergenceError, Interrupted, UserError
from ..monitor import require_logged
from ..options import Boolean, Either, OneOf, Option, Optional, declare, integer, number
from . import checkpoint, divergence, hardware, inputs, lr, optimizer_events, preparation, rng, speed, state, threads
from .callbacks import EVENTS, Callback
from .checks import check_arguments, logged_names, resolve_device, schedule_monitor
from .clipping import clip_gradients
from .dataloaders import Stream
from .evaluation import Evaluation
from .fit_state import SHOWN, EpochSums, FitState, Plan, shown
from .history import History
from .logs import ProgressBar, progress_bar
from .metrics import MetricSums, OneProcess, check_loss
from .preparation import prepare_data


class Trainer(Evaluation):
    """Trains a model: ``Trainer(model, loss=..., optimizer=..., callbacks=[...]).fit(train, val, epochs=...)``.

    ``model`` is any ``torch.nn.Module`` or a model spec from :mod:`descend.models` (built once the data tells the
    input shape and the number of outputs). ``optimizer`` is any ``torch.optim.Optimizer`` over the model's
    parameters, a spec from :func:`descend.optim.create` (bound to the model here), or None for Adam(lr=1e-3).
    ``loss`` is one of ``cross_entropy``, ``binary_cross_entropy``, ``mse``, ``mae`` (default from the task), or
    any callable ``loss(outputs, targets)`` such as ``torch.nn.CrossEntropyLoss(label_smoothing=0.1)``.
    ``metrics`` adds logged metrics: names (``top5_accuracy``, ``precision``, ``recall``, ``f1``, ``auroc``,
    ``rmse``) or callables ``fn(outputs, targets) -> scalar tensor`` (see :mod:`descend.train.metric_fns`).
    ``seed`` fixes initialisation of spec models, data order, dropout and augmentation; ``deterministic=True``
    also asks torch for deterministic kernels, so two runs on the CPU are bit-identical. ``checkpoints`` (a
    :class:`~descend.train.state.Checkpoints`) is a callback like any other, given here for convenience;
    ``on_divergence="rollback"`` needs one, to reload from. ``precision`` ("fp32", "bf16" autocast, "fp16" autocast
    with gradient scaling), ``channels_last`` (NHWC memory for 2-D convolutional models) and ``threads`` (CPU
    threads) are "auto" by default: decided from what the hardware computes natively and the model's size, and
    with ``deterministic=True`` never from the machine's load (:mod:`descend.train.hardware`; the choice and its
    reasons are ``trainer.speed`` once a fit starts, kept in checkpoints and reused on resume). ``compile``
    (torch.compile of the training forward) changes how the work runs, not what it computes
    (:mod:`descend.train.speed` says when it pays).

    ``schedule`` is a descend schedule (:mod:`descend.schedules`) or a torch LR scheduler (stepped per epoch, or
    per step with :class:`~descend.train.lr.TorchSchedule`); :mod:`descend.train.lr` says exactly who owns
    ``group["lr"]``. Calling :meth:`fit` again continues: the history is appended, epochs and steps count on, and
    the schedule runs again over the new fit's epochs from the base learning rate (a warm restart).

    The fit's state (position, base learning rates, running sums, random streams, the prepared data) is
    ``trainer.fit_state`` (:class:`~descend.train.fit_state.FitState`); ``epoch``, ``global_step``,
    ``batch_index``, ``history``, ``stop_training`` and the other position attributes read and write it.
    """

    epoch, global_step, batch_index, steps_per_epoch, total_steps, fit_start_epoch, fit_start_step, end_epoch, \
        stop_training, stop_signal, rollbacks, last_loss, step_loss, history, val_data = map(shown, SHOWN)

    @declare("Trainer",
             Option("precision", OneOf(*hardware.PRECISIONS), doc="auto, fp32, bf16 or fp16 autocast"),
             Option("clip_grad_norm", Optional(number(0, closed="right")), doc="clip the gradients' global norm"),
             Option("clip_grad_value", Optional(number(0, closed="right")), doc="clip each gradient element"),
             Option("seed", integer(0), doc="initialisation, data order, dropout and augmentation"),
             Option("deterministic", Boolean(), doc="ask torch for deterministic kernels"),
             Option("log_every", integer(1), doc="steps between reads of the training loss"),
             Option("on_divergence", OneOf(*divergence.ACTIONS), doc="stop, or reload the last checkpoint"),
             Option("max_rollbacks", integer(0), doc="rollbacks before giving up"),
             Option("threads", Either(OneOf("auto"), integer(1, 1024)), doc="CPU threads, or auto"),
             Option("channels_last", Either(OneOf("auto"), Boolean()),
                    doc="NHWC memory format for 2-D convolutional models, or auto"),
             Option("compile", Boolean(), doc="torch.compile the model's forward pass"))
    def __init__(self, model, *, loss=None, optimizer=None, schedule=None,
                 callbacks: Sequence[Callback] = (), metrics: Sequence = (), regularizer=None, augment=None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 device: str | torch.device = "auto", precision: str = "auto", seed: int = 0,
                 deterministic: bool = False, log_every: int = 50, checkpoints: state.Checkpoints | None = None,
                 on_divergence: str = "stop", max_rollbacks: int = 3, threads: int | str = "auto",
                 channels_last: bool | str = "auto", compile: bool = False):
        check_loss(loss)
        check_arguments(model, optimizer, on_divergence, checkpoints)
        if isinstance(optimizer, str):  # optimizer="adam", as Keras takes it: descend's optimizer of that name
            optimizer = optim.create(optimizer)
        self.model = model if isinstance(model, nn.Module) else None
        self.optimizer = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
        self.fit_state = FitState(  # the fit's state, with one owner; specs are built in prepare()
            model_spec=None if self.model is not None else model,
            optimizer_spec=None if self.optimizer else (optimizer or optim.create("adam", lr=1e-3)))
        self.loss, self.regularizer, self.augment = loss, regularizer, augment
        self.schedule = lr.as_schedule(schedule)
        self.metrics = list(metrics)
        self.callbacks = list(callbacks) + ([checkpoints] if checkpoints is not None else [])
        self.clip_grad_norm, self.clip_grad_value = clip_grad_norm, clip_grad_value
        self.device = resolve_device(device)
        self.precision, self.seed, self.deterministic, self.log_every = precision, seed, deterministic, log_every
        self.on_divergence, self.max_rollbacks, self.threads = on_divergence, max_rollbacks, threads
        self.channels_last, self.compile = channels_last, compile
        self._compiled: nn.Module | None = None  # torch.compile's wrapper of self.model (same parameters)
        self.speed: hardware.Settings | None = None  # the settings the last fit chose (hardware.decide)
        self.task: str | None = None
        self.target_scaler = None  # the training split's standardisation of regression targets (Split.target_scaler)

    @property
    def checkpoints(self) -> state.Checkpoints | None:
        """The checkpoint callback, if any (the trainer writes ``last`` to it on a stop signal)."""
        return next((cb for cb in self.callbacks if isinstance(cb, state.Checkpoints)), None)

    # ------------------------------------------------------------------ the loop
    def prepare(self, train, val=None, *, epochs: int = 10, batch_size: int | str = 128, shuffle: bool = True,
                drop_last: bool = False) -> None:
        """Check everything a :meth:`fit` with these arguments needs, before a step runs or a file is written.

        Data against the model and loss, the model and optimizer (built here for specs), the batches, the schedule
        over the length of training, and every callback's :meth:`~descend.train.callbacks.Callback.setup` (e.g. a
        monitor that will never be logged). ``fit`` calls it; call it first to find mistakes before writing.
        """
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
            raise UserError(f"epochs must be a positive integer, got {epochs!r}")
        # the plan is reused only for the very same data objects (kept in the plan, so an (x, y) pair made afresh
        # for a later call can never pass for an earlier one that happened to have the same id)
        fit, arguments = self.fit_state, (epochs, batch_size, shuffle, drop_last)
        if fit.plan is None or not fit.plan.matches(train, val, arguments):
            split, batches = prepare_data(self, train, "train")
            held = prepare_data(self, val, "val")[1] if val is not None else None
            if batches is None:
                batches = self._batches(split, batch_size, shuffle=shuffle, drop_last=drop_last)
            if hasattr(self.augment, "check"):  # descend's Augment; any callable (x, generator) -> x is welcome
                self.augment.check((1, *split.x.shape[1:]), split.x.dtype)
            fit.plan = Plan(train, val, arguments, split, held, batches)
        split, held, batches = fit.plan.split, fit.plan.held, fit.plan.batches
        fit.steps_per_epoch = len(batches)
        if self.schedule is not None and not isinstance(self.schedule, lr.TorchSchedule):
            self.schedule.bind(self.steps_per_epoch, self.steps_per_epoch * epochs)  # over this fit's steps
        optimizer_events.attach(self)  # schedule-free train/eval weights, values an optimizer logs
        logged = logged_names(self, self._metric_sums().names(), held is not None)
        for callback in sorted(self.callbacks, key=lambda cb: cb.order):
            callback.setup(self, logged)
        if (monitor := schedule_monitor(self.schedule)) is not None:
            require_logged("plateau schedule", monitor, logged)
        fit.train, fit.val_data, fit.batch_size = batches if isinstance(batches, Stream) else split, held, batch_size

    def fit(self, train, val=None, *, epochs: int = 10, batch_size: int | str = 128, shuffle: bool = True,
            drop_last: bool = False, resume: str | Path | None = None, progress: bool | None = None,
            validation_split: float | None = None) -> History:
        """Train for ``epochs`` epochs; returns the history (one dict of logged values per epoch).

        ``train`` and ``val``: a :class:`~descend.data.Split`, an ``(x, y)`` pair, or a torch ``DataLoader`` (any
        re-iterable of ``(x, y)`` batches) for data that does not fit in memory (:mod:`descend.train.dataloaders` says
        what that costs). ``resume``: a checkpoint file or a run/checkpoints directory; training continues exactly
        where it stopped. ``progress``: show a progress bar; by default on a terminal or in a notebook (unless a
        :class:`~descend.callbacks.ProgressBar` is among the callbacks already). As Keras: ``fit(x, y)`` with inputs
        and targets as arrays, and ``validation_split`` to hold out the last rows (:mod:`descend.train.inputs`).
        """
        train, val = inputs.data_pairs(train, val, validation_split)
        self.prepare(train, val, epochs=epochs, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
        val, batches = self.fit_state.plan.held, self.fit_state.plan.batches
        bar = progress_bar(self.callbacks, progress)
        self.callbacks += [bar] if bar is not None else []
        saved = checkpoint.load(state.find(resume), device=self.device) if resume is not None else None
        preparation.choose_speed(self, saved)
        with hardware.deterministic_kernels(self.deterministic), state.stop_on_signals(self), \
                threads.fixed(self.speed.threads):
            self._start(batches, epochs)
            if saved is not None:
                self.load_state_dict(saved)
                self.fit_state.lasts(epochs)  # the fit the checkpoint was written in ends where it would have
            try:
                self._event("on_fit_start")
                while self.epoch < self.end_epoch and not self.stop_training:
                    try:
                        self._run_epoch(batches, val)
                    except DivergenceError as diverged:
                        if not divergence.can_roll_back(self):
                            raise
                        divergence.roll_back(self, diverged)
                self._event("on_fit_end")
            finally:
                lr.finish(self)
                for shown in (cb for cb in self.callbacks if isinstance(cb, ProgressBar)):
                    shown.close()  # the fit's bar or the user's: its line ends before any message (Ctrl-C)
                if bar is not None:
                    self.callbacks.remove(bar)
        return self.history

    def _run_epoch(self, batches: Batches, val: Split | None) -> None:
        started, fit = time.perf_counter(), self.fit_state
        if fit.batch_index == 0:
            self._event("on_epoch_start")
            fit.sums = self._fresh_sums()
        logs = {"epoch": self.epoch + 1, **self._train_epoch(batches)}  # epochs and steps count from 1
        divergence.check_weights(self)  # note: a host sync, once per epoch
        if val is not None:
            self._event("on_validation_start")
            val_logs = self._evaluate(val, prefix="val_")
            divergence.check_validation(self, val_logs)
            self._event("on_validation_end", val_logs)
            logs.update(val_logs)
        logs.update(step=self.global_step, lr=self.optimizer.param_groups[0]["lr"],
                    seconds=time.perf_counter() - started)
        fit.history.append(logs)    # the same dict: values callbacks add below show in the history too
        lr.after_epoch(self, logs)
        fit.epoch_done = True       # a checkpoint written from here on resumes at the next epoch
        self._event("on_epoch_end", logs)
        fit.epoch, fit.batch_index, fit.epoch_done = fit.epoch + 1, 0, False

    def _train_epoch(self, batches: Batches) -> dict[str, float]:
        fit, model, opt, forward = self.fit_state, self.model, self.optimizer, self._training_forward()
        sums, augment_rng, scaler = fit.sums, fit.augment_rng, fit.scaler
        after_backward, batch_end = self._handlers["on_after_backward"], self._handlers["on_batch_end"]
        closure, autocast = getattr(opt, "needs_closure", False), self._autocast()
        scheduled = self.schedule is not None and not isinstance(self.schedule, lr.TorchSchedule)
        step_schedule = isinstance(self.schedule, lr.TorchSchedule) and self.schedule.per == "step"
        model.train()
        for x, y in batches.epoch(fit.epoch, start=fit.batch_index):
            # note: without a descend schedule nothing writes group["lr"]; the rate is only read for proximal L1
            rate = lr.before_step(self) if scheduled else opt.param_groups[0]["lr"]
            if self.augment is not None:
                x = self.augment(x, augment_rng)
            with autocast:
                out = forward(x)
                data_loss = self._loss_fn(out, y)
            penalty = self.regularizer.penalty(model) if self.regularizer is not None else None
            loss = data_loss if penalty is None else data_loss + penalty
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
            else:  # fp16: the loss scaled up so small gradients do not underflow, the gradients scaled back
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            if after_backward or batch_end:
                fit.step_loss = loss.detach()
                for handler in after_backward:
                    handler(self)
            norm = clip_gradients(model, self.clip_grad_norm, self.clip_grad_value)
            if closure:
                opt.step(lambda x=x, y=y: self._closure_loss(x, y))
            elif scaler is not None:
                scaler.step(opt)  # skipped when a gradient overflowed; the scale then shrinks
                scaler.update()
            else:
                opt.step()
            if step_schedule:
                lr.after_step(self)  # a torch scheduler stepped per optimizer step
            if penalty is not None:
                self.regularizer.after_step(model, rate)
                n = torch.full((), y.shape[0], dtype=torch.float32, device=self.device)
                sums.penalty += torch.stack([penalty.detach().float() * n, n])
            if norm is not None:
                sums.grad_norm += torch.stack([norm.detach().float(), torch.ones((), device=norm.device)])
            sums.metrics.update(out, y, data_loss)
            fit.watch.update(loss)  # held on the device; read every log_every steps
            fit.global_step, fit.batch_index = fit.global_step + 1, fit.batch_index + 1
            if fit.global_step % self.log_every == 0:
                self.check_finite()  # note: a host sync, every log_every steps only
            for handler in batch_end:
                handler(self)
            if fit.stop_signal is not None:
                self._stop_for_signal()
        self.check_finite()
        logs = sums.metrics.compute("train_")  # note: the epoch's one host sync for the training sums
        if self.regularizer is not None:
            total, samples = fit.processes.sum(sums.penalty.clone()).tolist()
            logs["train_penalty"] = total / max(samples, 1.0)
        if self.clip_grad_norm is not None or self.clip_grad_value is not None:
            total, steps = fit.processes.sum(sums.grad_norm.clone()).tolist()
            logs["grad_norm"] = total / max(steps, 1.0)
        fit.last_loss = logs.get("train_loss", math.nan)
        return logs

    def scale_lr(self, factor: float) -> None:
        """Multiply every group's learning rate by ``factor`` from the next step on (a schedule keeps shaping it).

        The scaled base rates are part of the trainer state, so a resumed run keeps the change.
        """
        if not factor > 0:
            raise UserError(f"the learning-rate factor must be > 0, got {factor!r}")
        lr.scale(self, factor)

    def add_epochs(self, n: int) -> None:
        """Train ``n`` epochs more than fit() was asked for (a schedule keeps its length and stays at its end)."""
        fit = self.fit_state
        fit.end_epoch, fit.total_steps = fit.end_epoch + n, fit.total_steps + n * fit.steps_per_epoch

    def _batches(self, train: Split, batch_size: int | str, **options) -> Batches:
        """The training batches (:class:`descend.distributed.DistributedTrainer` shards them across processes)."""
        return Batches(train, batch_size, seed=self.seed, **options)

    def _training_forward(self) -> nn.Module:
        """What the training step calls: the model, or its torch.compile wrapper with ``compile=True``."""
        if self.compile and self._compiled is None:
            self._compiled = speed.compiled(self._forward_module())
        return self._compiled if self._compiled is not None else self._forward_module()

    def _forward_module(self) -> nn.Module:
        """The module a training step runs: the model (under data parallelism, its DDP wrapper)."""
        return self.model

    def _stop_for_signal(self) -> None:
        keeper = self.checkpoints
        if keeper is not None:
            keeper.write(self, keeper.last)
        raise Interrupted(self.stop_signal, keeper.last if keeper is not None else None)

    def train_batches(self, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The training split as ``(x, y)`` batches on the device, in a fixed order, without augmentation.

        For callbacks that need a pass over the training data (batch-norm statistics after weight averaging);
        available from ``on_fit_start`` on. Read-only: the tensors are the trainer's own.
        """
        train, chosen = self.fit_state.train, self.fit_state.batch_size
        if train is None:
            raise UserError("train_batches() is available once fit() has started")
        if isinstance(train, Stream):
            return train.epoch(0)
        return Batches(train, batch_size or (chosen if chosen != "full" else len(train)), shuffle=False).epoch(0)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and JSON values only; see :mod:`descend.train.state`)."""
        return state.capture(self)

    def load_state_dict(self, saved: dict) -> None:
        """Continue from ``saved`` (a :meth:`state_dict`); the data and model must be those it was saved with."""
        state.restore(self, saved)

    # ------------------------------------------------------------------ set-up
    def _start(self, batches: Batches | Stream, epochs: int) -> None:
        # a second fit continues the first: history appended, epochs and steps counted on, RNG streams not reseeded
        fit = self.fit_state
        continuing = bool(fit.history)
        if not continuing:
            rng.seed_torch(self.seed)
            fit.augment_rng = torch.Generator(device=self.device).manual_seed(self.seed)
        fit.start(epochs, continuing)
        fit.sums = self._fresh_sums()
        lr.start(self, continuing)
        # callbacks in order; each event's handlers listed once, so events nobody overrides cost nothing per step
        self.callbacks.sort(key=lambda cb: cb.order)
        self._handlers = {event: [getattr(cb, event) for cb in self.callbacks
                                  if getattr(type(cb), event) is not getattr(Callback, event)] for event in EVENTS}

    def _autocast(self):
        """The fit's autocast (:func:`~descend.train.hardware.autocast`); before a fit has chosen, "auto" is fp32."""
        return hardware.autocast(self.device, self.speed.precision if self.speed is not None else self.precision)

    def decide_speed(self) -> hardware.Settings:
        """The speed settings a fit with the data of the last :meth:`prepare` would choose now, with their reasons
        (:func:`descend.train.hardware.decide`; ``descend show`` prints them)."""
        return preparation.decide_speed(self)

    # ------------------------------------------------------------------ step parts
    def _loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fit_state.loss_fn(out.float(), y)

    def _fresh_sums(self) -> EpochSums:
        return EpochSums.zeros(self._metric_sums(self.fit_state.processes), self.device)

    def _metric_sums(self, processes: OneProcess | None = None) -> MetricSums:
        return MetricSums(self.loss, self.device, task=self.task, metrics=self.metrics, processes=processes,
                          target_scaler=self.target_scaler)

    def _closure_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # the step's second forward pass: batch norm's running statistics were updated by the first
        with torch.enable_grad():
            with self._autocast():
                loss = self._loss_fn(optimizer_events.forward_keeping_buffers(self.model, x), y)
            loss = loss if self.regularizer is None else loss + self.regularizer.penalty(self.model)
        if getattr(self.optimizer, "closure_backward", False):  # SAM: this gradient makes the step, clipped alike
            loss.backward()
            clip_gradients(self.model, self.clip_grad_norm, self.clip_grad_value)
        return loss

    def check_finite(self) -> None:
        """Raise :class:`DivergenceError` if a loss since the start was not finite (one host sync).

        Also refreshes ``last_loss`` (the latest finite step loss) for progress displays.
        """
        self.fit_state.last_loss = self.fit_state.watch.check(self)

    def _event(self, name: str, *args) -> None:
        for handler in self._handlers[name]:
            handler(self, *args)
