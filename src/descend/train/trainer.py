"""The one training loop.

Epochs over in-memory batches: forward, loss (+ penalty), backward, (clip), optimizer step, with the callback
events of :mod:`descend.train.callbacks` around it and a validation pass under ``torch.inference_mode()`` after
every epoch. Losses and metrics stay on the device and are read once per epoch or every ``log_every`` steps;
the step itself never waits for the host.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import optim
from ..data import Batches, Split
from ..errors import DivergenceError, Interrupted, UserError
from . import checkpoint, divergence, state
from .callbacks import EVENTS, Callback
from .checks import as_split, check_data, check_shapes, logged_names, require_logged, resolve_device, schedule_monitor
from .history import History
from .metrics import LOSSES, MetricSums, num_outputs, resolve_loss

PRECISIONS = ("fp32", "bf16")
PER_STEP = ("on_after_backward", "on_batch_end")


class Trainer:
    """Trains a model: ``Trainer(model, loss=..., optimizer=..., callbacks=[...]).fit(train, val, epochs=...)``.

    ``model`` is any ``torch.nn.Module`` or a model spec from :mod:`descend.models` (built once the data tells the
    input shape and the number of outputs). ``optimizer`` is any ``torch.optim.Optimizer`` over the model's
    parameters, a spec from :func:`descend.optim.create` (bound to the model here), or None for Adam(lr=1e-3).
    ``loss`` is one of ``cross_entropy``, ``binary_cross_entropy``, ``mse``, ``mae`` (default from the task).
    ``seed`` fixes initialisation of spec models, data order, dropout and augmentation; ``deterministic=True``
    also asks torch for deterministic kernels, so two runs on the CPU are bit-identical. ``checkpoints`` (a
    :class:`~descend.train.state.Checkpoints`) is a callback like any other, given here for convenience;
    ``on_divergence="rollback"`` needs one, to reload from.
    """

    def __init__(self, model, *, loss: str | None = None, optimizer=None, schedule=None,
                 callbacks: Sequence[Callback] = (), regularizer=None, augment=None,
                 clip_grad_norm: float | None = None, clip_grad_value: float | None = None,
                 device: str | torch.device = "auto", precision: str = "fp32", seed: int = 0,
                 deterministic: bool = False, log_every: int = 50, checkpoints: state.Checkpoints | None = None,
                 on_divergence: str = "stop", max_rollbacks: int = 3):
        if loss is not None and loss not in LOSSES:
            raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
        for name, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
            if value is not None and not value > 0:
                raise UserError(f"{name} must be > 0, got {value}")
        if log_every < 1:
            raise UserError(f"log_every must be >= 1, got {log_every}")
        if on_divergence not in divergence.ACTIONS:
            raise UserError(f"on_divergence must be 'stop' or 'rollback', got {on_divergence!r}")
        if on_divergence == "rollback" and checkpoints is None:
            raise UserError("on_divergence='rollback' reloads the last checkpoint: pass checkpoints=Checkpoints(...)")
        self.model = model if isinstance(model, nn.Module) else None
        self._model_spec = None if isinstance(model, nn.Module) else model
        if self._model_spec is not None and not hasattr(model, "build"):
            raise UserError(f"model must be a torch.nn.Module or a descend.models spec, got {type(model).__name__}")
        if isinstance(optimizer, torch.optim.Optimizer) and self.model is None:
            raise UserError("a ready-made torch optimizer needs a ready-made model; pass descend.optim.create(...) "
                            "without parameters to let the trainer bind it to the model it builds")
        self.optimizer = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
        self._optimizer_spec = None if self.optimizer else (optimizer or optim.create("adam", lr=1e-3))
        self.loss, self.schedule, self.regularizer, self.augment = loss, schedule, regularizer, augment
        self.callbacks = list(callbacks) + ([checkpoints] if checkpoints is not None else [])
        self.clip_grad_norm, self.clip_grad_value = clip_grad_norm, clip_grad_value
        self.device = resolve_device(device)
        self.precision, self.seed, self.deterministic, self.log_every = precision, seed, deterministic, log_every
        self.on_divergence, self.max_rollbacks = on_divergence, max_rollbacks
        self.rollbacks = 0         # divergence rollbacks so far
        self.stop_signal = None    # set by SIGINT/SIGTERM during fit; the loop stops at the next step boundary
        self.history = History()
        self.epoch = 0             # index of the epoch running (in on_epoch_end: the one just finished)
        self.global_step = 0       # optimizer steps taken
        self.batch_index = 0       # batches done in the running epoch
        self.last_loss = math.nan  # training loss, refreshed every log_every steps and at epoch ends
        self.step_loss = None      # the current step's loss (detached, on the device) while per-step events run
        self.stop_training = False
        self.task: str | None = None
        self.steps_per_epoch = 0
        self.total_steps = 0
        self._epoch_done = False   # the running epoch is complete (its on_epoch_end events are under way)
        self._train: Split | None = None
        self.val_data: Split | None = None  # the running fit's validation split (for callbacks)
        self._batch_size: int | str = 128
        self._plan = None          # (arguments, train split, val split, batches) of the last prepare()

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
        key = (id(train), id(val), epochs, batch_size, shuffle, drop_last)
        if self._plan is None or self._plan[0] != key:
            split = self._prepare(as_split(train, "train"))
            held = self._prepare(as_split(val, "val")) if val is not None else None
            batches = Batches(split, batch_size, shuffle=shuffle, drop_last=drop_last, seed=self.seed)
            if hasattr(self.augment, "check"):  # descend's Augment; any callable (x, generator) -> x is welcome
                self.augment.check((1, *split.x.shape[1:]), split.x.dtype)
            self._plan = (key, split, held, batches)
        _, split, held, batches = self._plan
        self.steps_per_epoch, self.total_steps = len(batches), len(batches) * epochs
        if self.schedule is not None:
            self.schedule.bind(self.steps_per_epoch, self.total_steps)
        logged = logged_names(self, held is not None)
        for callback in sorted(self.callbacks, key=lambda cb: cb.order):
            callback.setup(self, logged)
        if (monitor := schedule_monitor(self.schedule)) is not None:
            require_logged("plateau schedule", monitor, logged)
        self._train, self.val_data, self._batch_size = split, held, batch_size

    def fit(self, train, val=None, *, epochs: int = 10, batch_size: int | str = 128, shuffle: bool = True,
            drop_last: bool = False, resume: str | Path | None = None) -> History:
        """Train for ``epochs`` epochs; returns the history (one dict of logged values per epoch).

        ``resume``: a checkpoint file or a run/checkpoints directory; training continues exactly where it stopped.
        """
        self.prepare(train, val, epochs=epochs, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last)
        _, _, val, batches = self._plan
        self.epochs = epochs  # callbacks may add epochs (add_epochs)
        with self._determinism(), state.stop_on_signals(self):
            self._start(batches, epochs)
            if resume is not None:
                self.load_state_dict(checkpoint.load(state.find(resume), device=self.device))
            self._event("on_fit_start")
            while self.epoch < self.epochs and not self.stop_training:
                try:
                    self._run_epoch(batches, val)
                except DivergenceError as diverged:
                    if not divergence.can_roll_back(self):
                        raise
                    divergence.roll_back(self, diverged)
            self._event("on_fit_end")
        return self.history

    def _run_epoch(self, batches: Batches, val: Split | None) -> None:
        started = time.perf_counter()
        if self.batch_index == 0:
            self._event("on_epoch_start")
            self._sums = self._fresh_sums()
        logs = {"epoch": self.epoch, **self._train_epoch(batches)}
        divergence.check_weights(self)  # note: a host sync, once per epoch
        if val is not None:
            self._event("on_validation_start")
            val_logs = self._evaluate(val, prefix="val_")
            divergence.check_validation(self, val_logs)
            self._event("on_validation_end", val_logs)
            logs.update(val_logs)
        logs.update(step=self.global_step, lr=self.optimizer.param_groups[0]["lr"],
                    seconds=time.perf_counter() - started)
        self.history.append(logs)   # the same dict: values callbacks add below show in the history too
        if self.schedule is not None:
            self.schedule.observe(logs)
        self._epoch_done = True     # a checkpoint written from here on resumes at the next epoch
        self._event("on_epoch_end", logs)
        self.epoch, self.batch_index, self._epoch_done = self.epoch + 1, 0, False

    def _train_epoch(self, batches: Batches) -> dict[str, float]:
        model, opt, sums = self.model, self.optimizer, self._sums
        after_backward, batch_end = self._handlers["on_after_backward"], self._handlers["on_batch_end"]
        model.train()
        for x, y in batches.epoch(self.epoch, start=self.batch_index):
            lr = self._set_lr()
            if self.augment is not None:
                x = self.augment(x, self._augment_rng)
            with self._autocast():
                out = model(x)
                data_loss = self._loss_fn(out, y)
            penalty = self.regularizer.penalty(model) if self.regularizer is not None else None
            loss = data_loss if penalty is None else data_loss + penalty
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward or batch_end:
                self.step_loss = loss.detach()
                for handler in after_backward:
                    handler(self)
            norm = self._clip()
            if getattr(opt, "needs_closure", False):
                opt.step(lambda x=x, y=y: self._closure_loss(x, y))
            else:
                opt.step()
            if penalty is not None:
                self.regularizer.after_step(model, lr)
                n = torch.full((), y.shape[0], dtype=torch.float32, device=self.device)
                sums["penalty"] += torch.stack([penalty.detach().float() * n, n])
            if norm is not None:
                sums["grad_norm"] += torch.stack([norm.detach().float(), torch.ones((), device=norm.device)])
            sums["metrics"].update(out, y, data_loss)
            self._watch.update(loss)
            self.global_step, self.batch_index = self.global_step + 1, self.batch_index + 1
            if self.global_step % self.log_every == 0:
                self.check_finite()  # note: a host sync, every log_every steps only
            for handler in batch_end:
                handler(self)
            if self.stop_signal is not None:
                self._stop_for_signal()
        self.check_finite()
        logs = sums["metrics"].compute("train_")  # note: the epoch's one host sync for the training sums
        if self.regularizer is not None:
            total, samples = sums["penalty"].tolist()
            logs["train_penalty"] = total / max(samples, 1.0)
        if self.clip_grad_norm is not None or self.clip_grad_value is not None:
            total, steps = sums["grad_norm"].tolist()
            logs["grad_norm"] = total / max(steps, 1.0)
        self.last_loss = logs.get("train_loss", math.nan)
        return logs

    def _fresh_sums(self) -> dict:
        """The epoch's running sums, on the device: metrics, (Σ penalty·n, n), (Σ pre-clip grad norm, steps)."""
        return {"metrics": MetricSums(self.loss, self.device), "penalty": torch.zeros(2, device=self.device),
                "grad_norm": torch.zeros(2, device=self.device)}

    def scale_lr(self, factor: float) -> None:
        """Multiply every group's learning rate by ``factor`` from the next step on (a schedule keeps shaping it).

        The scaled base rates are part of the trainer state, so a resumed run keeps the change.
        """
        if not factor > 0:
            raise UserError(f"the learning-rate factor must be > 0, got {factor!r}")
        self._base_lrs = [lr * factor for lr in self._base_lrs]

    def add_epochs(self, n: int) -> None:
        """Train ``n`` epochs more than fit() was asked for (a schedule keeps its length and stays at its end)."""
        self.epochs += n

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
        if self._train is None:
            raise UserError("train_batches() is available once fit() has started")
        size = batch_size or (self._batch_size if self._batch_size != "full" else len(self._train))
        return Batches(self._train, size, shuffle=False).epoch(0)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and JSON values only; see :mod:`descend.train.state`)."""
        return state.capture(self)

    def load_state_dict(self, saved: dict) -> None:
        """Continue from ``saved`` (a :meth:`state_dict`); the data and model must be those it was saved with."""
        state.restore(self, saved)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        """Mean loss and metrics over ``data`` in eval mode (dropout off, batch norm on running statistics)."""
        return self._evaluate(self._prepare(as_split(data, "data")), batch_size=batch_size, prefix=prefix)

    @torch.inference_mode()
    def _evaluate(self, split: Split, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        sums = MetricSums(self.loss, self.device)
        for x, y in Batches(split, min(batch_size, len(split)), shuffle=False).epoch(0):
            with self._autocast():
                out = self.model(x)
                sums.update(out, y, self._loss_fn(out, y))
        self.model.train(was_training)
        return sums.compute(prefix)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """The model's outputs (logits for classifiers) for inputs ``x``, in eval mode, on x's device."""
        if self.model is None:
            raise UserError("the model is not built yet: call fit() first, or pass a torch.nn.Module")
        x = torch.as_tensor(x)
        was_training = self.model.training
        self.model.eval()
        with self._autocast():
            outs = [self.model(x[i:i + batch_size].to(self.device).float()).float()
                    for i in range(0, len(x), batch_size)]
        self.model.train(was_training)
        return torch.cat(outs).to(x.device)

    # ------------------------------------------------------------------ set-up
    def _prepare(self, split: Split) -> Split:
        """Check the data against the model (building spec models and optimizers on first sight)."""
        if self.task is None:
            self.task = split.task
            self.loss = resolve_loss(self.loss, split.task)
        elif split.task != self.task:
            raise UserError(f"this trainer learns a {self.task} task but was given {split.task} data")
        outputs = num_outputs(self.loss, split.task, split.num_classes, split.y)
        check_data(split, self.loss, outputs)
        if self.model is None:
            torch.manual_seed(self.seed)
            self.model = self._model_spec.build(tuple(split.x.shape[1:]), outputs)
        self.model.to(self.device)
        if self.optimizer is None:
            self.optimizer = self._optimizer_spec.build(self.model)
        check_shapes(self.model, split, self.loss, outputs, self.device)
        return split.to(self.device)

    def _start(self, batches: Batches, epochs: int) -> None:
        self.epoch, self.batch_index, self.global_step, self.stop_training = 0, 0, 0, False
        self.stop_signal, self.rollbacks, self._epoch_done = None, 0, False
        self.history = History()
        self._sums = self._fresh_sums()
        torch.manual_seed(self.seed)
        self._augment_rng = torch.Generator(device=self.device).manual_seed(self.seed)
        self._base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self._watch = divergence.Watch(self.device)
        # callbacks in order; each event's handlers listed once, so events nobody overrides cost nothing per step
        self.callbacks.sort(key=lambda cb: cb.order)
        self._handlers = {event: [getattr(cb, event) for cb in self.callbacks
                                  if getattr(type(cb), event) is not getattr(Callback, event)] for event in EVENTS}

    @contextlib.contextmanager
    def _determinism(self):
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(self.deterministic or before)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(before)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ------------------------------------------------------------------ step parts
    def _loss_fn(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return LOSSES[self.loss](out.float(), y)

    def _closure_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            with self._autocast():
                loss = self._loss_fn(self.model(x), y)
            return loss if self.regularizer is None else loss + self.regularizer.penalty(self.model)

    def _set_lr(self) -> float:
        groups = self.optimizer.param_groups
        for group, base in zip(groups, self._base_lrs):
            group["lr"] = base if self.schedule is None else self.schedule.lr(base, self.global_step)
        return groups[0]["lr"]

    def _clip(self) -> torch.Tensor | None:
        """Clip the gradients as asked; returns their norm before clipping (None when clipping is off)."""
        if self.clip_grad_norm is None and self.clip_grad_value is None:
            return None
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.clip_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(params, self.clip_grad_norm, foreach=True)
        else:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
        if self.clip_grad_value is not None:
            nn.utils.clip_grad_value_(params, self.clip_grad_value, foreach=True)
        return norm

    def check_finite(self) -> None:
        """Raise :class:`DivergenceError` if a loss since the start was not finite (one host sync).

        Also refreshes ``last_loss`` (the latest finite step loss) for progress displays.
        """
        self.last_loss = self._watch.check(self)

    def _event(self, name: str, *args) -> None:
        for handler in self._handlers[name]:
            handler(self, *args)
