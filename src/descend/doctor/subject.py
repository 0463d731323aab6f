"""What the doctor examines, and how it runs its short experiments on it.

A :class:`Subject` is the data plus a way to make a fresh trainer (same initial weights for the same seed) with the
recipe's model, loss, optimizer, schedule, regularizer and clipping. It comes from a recipe, a built
:class:`~descend.runs.experiment.Experiment`, or a ready ``torch.nn.Module`` and data (for models no recipe describes).
:func:`probe` trains a trainer for a number of steps under a deadline and records every step's loss; it drives the
trainer only through its public API (``fit`` and callbacks).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .. import optim
from ..data import DataBundle, DatasetInfo, Split
from ..errors import DivergenceError, UserError
from ..runs import experiment
from ..runs.ensemble import snapshot_recipe
from ..train import Trainer
from ..train.callbacks import Callback, EarlyStopping
from ..train.checks import as_split


@dataclass
class Subject:
    name: str
    data: DataBundle
    make: Callable[[int | None], Trainer]  # make(seed): a fresh trainer; None = the recipe's seed
    epochs: int
    batch_size: int | str
    lr: float | None                        # the configured (peak) learning rate
    clip_grad_norm: float | None = None
    raw: dict | None = None                 # the recipe as a dict, for fixes
    scale: str | None = None                # the recipe's data.scale


def from_config(config) -> Subject:
    """A subject from a validated recipe (:class:`descend.config.Config`); the data is loaded once."""
    return from_experiment_parts(config, experiment.load_data(config))


def from_experiment_parts(config, data: DataBundle) -> Subject:
    """A subject from a recipe and its loaded data (e.g. a built Experiment's ``config`` and ``data``).

    A snapshot ensemble is examined as it trains: with its cosine cycles in place of the recipe's schedule."""
    trained = config
    if config.ensemble is not None and (spec := config.ensemble.build()).kind == "snapshots":
        trained = snapshot_recipe(config, spec.size)

    def make(seed: int | None) -> Trainer:
        c = trained if seed is None else trained.model_copy(update={"seed": int(seed)})
        return experiment.build(c, data=data).trainer

    lr = config.optimizer.options.get("lr") or _spec_lr(config.optimizer.build())
    return Subject(config.name or "recipe", data, make, config.train.epochs, config.train.batch_size, lr,
                   config.train.clip_grad_norm, config.model_dump(exclude_none=True), config.data.scale)


def from_model(model: torch.nn.Module, data, *, loss: str | None = None, optimizer=None, epochs: int = 10,
               batch_size: int | str = 128, clip_grad_norm: float | None = None, name: str = "model",
               device: str = "auto") -> Subject:
    """A subject from a ready model and data: a :class:`DataBundle`, or ``(train, val)`` splits / (x, y) pairs.

    ``optimizer`` is a spec from :func:`descend.optim.create` (default Adam, lr 1e-3); every trainer gets a deep
    copy of ``model`` as it is now, so each experiment starts from the same weights.
    """
    if not isinstance(model, torch.nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(optimizer, torch.optim.Optimizer):
        raise UserError("give the optimizer as a spec, e.g. descend.optim.create('sgd', lr=0.1): the doctor binds "
                        "it to a fresh copy of the model for every experiment")
    bundle = as_bundle(data)
    spec = optimizer or optim.create("adam", lr=1e-3)
    initial = copy.deepcopy(model)

    def make(seed: int | None) -> Trainer:
        return Trainer(copy.deepcopy(initial), loss=loss, optimizer=spec, clip_grad_norm=clip_grad_norm,
                       device=device, seed=0 if seed is None else int(seed))

    return Subject(name, bundle, make, epochs, batch_size, _spec_lr(spec), clip_grad_norm)


def _spec_lr(spec) -> float | None:
    """The learning rate an optimizer spec will use (read from a throwaway optimizer on one parameter)."""
    try:
        return float(spec.build(torch.nn.Linear(1, 1)).param_groups[0]["lr"])
    except (AttributeError, KeyError, TypeError, UserError):
        return None


def as_bundle(data) -> DataBundle:
    """A DataBundle from a bundle, or from ``(train, val)`` where each is a Split or an (x, y) pair."""
    if isinstance(data, DataBundle):
        return data
    if isinstance(data, Sequence) and len(data) == 2:
        train, val = as_split(data[0], "train"), as_split(data[1], "val")
        info = DatasetInfo("data", train.task, tuple(train.x.shape[1:]), train.num_classes,
                           train.num_classes or 1, {"train": len(train), "val": len(val)}, "given in Python")
        return DataBundle(train, val, None, info)
    raise UserError("data must be a descend.data.DataBundle or a (train, val) pair of Splits or (x, y) pairs")


class Stop(Exception):
    """Raised from a probe's callback to end training mid-epoch (deadline, step limit, divergence)."""


@dataclass
class Probe:
    """What :func:`probe` saw: every step's loss, the history, and why it ended."""

    losses: list[float]
    history: list[dict]
    trainer: Trainer
    cut_short: bool = False
    diverged_at: int | None = None
    seconds: float = 0.0
    times: list[float] | None = None  # time.perf_counter() at the end of each step

    @property
    def step_seconds(self) -> float:
        """Seconds per optimizer step, from the gaps between step ends: ``fit``'s start-up (building the loop,
        the first step's one-off kernel set-up) is left out, so a few steps predict a long sweep's time."""
        gaps = sorted(b - a for a, b in zip(self.times or [], (self.times or [])[1:]))
        return gaps[len(gaps) // 2] if gaps else self.seconds / max(len(self.losses), 1)


class _Recorder(Callback):
    order = -10  # before other callbacks, so a stop happens before they see the step

    def __init__(self, deadline: float, max_steps: int | None, stop_if: Callable[[list[float]], bool] | None):
        self.deadline, self.max_steps, self.stop_if = deadline, max_steps, stop_if
        self.losses: list[float] = []
        self.times: list[float] = []
        self.cut_short, self.diverged_at = False, None

    def on_batch_end(self, trainer) -> None:
        loss = float(trainer.step_loss)  # a host sync per step: the doctor's probes are short and need each value
        self.losses.append(loss)
        self.times.append(time.perf_counter())
        if not math.isfinite(loss):
            self.diverged_at = len(self.losses) - 1
            raise Stop
        if self.max_steps is not None and len(self.losses) >= self.max_steps:
            raise Stop
        if self.stop_if is not None and self.stop_if(self.losses):
            raise Stop
        if time.perf_counter() > self.deadline:
            self.cut_short = True
            raise Stop


def probe(trainer: Trainer, train: Split, val: Split | None = None, *, deadline: float, steps: int | None = None,
          epochs: int | None = None, batch_size: int | str = 128, callbacks: Sequence[Callback] = (),
          stop_if: Callable[[list[float]], bool] | None = None) -> Probe:
    """Train for ``steps`` optimizer steps (or ``epochs``), stopping at ``deadline`` or when ``stop_if(losses)``.

    Early stopping is left out (a probe judges the raw curves); a loss that turns non-finite ends the probe and is
    reported as ``diverged_at`` (the step), not raised.
    """
    started = time.perf_counter()
    recorder = _Recorder(deadline, steps, stop_if)
    trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, EarlyStopping)]
    trainer.callbacks += [recorder, *callbacks]
    if epochs is None:
        per_epoch = max(1, len(train) // _size(batch_size, len(train)))
        epochs = max(1, math.ceil((steps or 1) / per_epoch) + 1)
    try:
        trainer.fit(train, val, epochs=epochs, batch_size=batch_size, shuffle=True)
    except Stop:
        pass
    except DivergenceError:
        recorder.diverged_at = len(recorder.losses)
    return Probe(recorder.losses, list(trainer.history), trainer, recorder.cut_short, recorder.diverged_at,
                 time.perf_counter() - started, recorder.times)


def _size(batch_size: int | str, n: int) -> int:
    return n if batch_size == "full" else max(1, min(int(batch_size), n))
