"""The trainer's preparation: from what the user hands over to a model, an optimizer and data on the device.

On first sight of the data (the training split) the run's task is settled: the loss and metrics that fit it, and
the number of outputs, with which a model spec is built (seeded) and an optimizer spec bound to the model. Every
split is checked (:mod:`descend.train.checks`) and moved to the device in the model's memory layout. The specs and
the loss callable are the fit's state (:class:`~descend.train.fit_state.FitState`); the model, optimizer, loss and
metrics are the trainer's public attributes. :func:`choose_speed` decides a fit's speed settings
(:mod:`descend.train.hardware`).
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..data import Split
from ..errors import UserError
from . import hardware, metric_fns, rng, speed
from .checks import as_split, check_model, check_split, is_integer, model_inputs
from .dataloaders import Stream, is_stream
from .metrics import loss_function, resolve_loss


def prepare_data(trainer, data, what: str):
    """The checked data and what to iterate: for in-memory data the split and None (training: the caller makes
    its Batches) or the split itself (evaluation); for a DataLoader its first batch and the stream."""
    if not is_stream(data):
        split = prepare_split(trainer, as_split(data, what))
        return split, None if what == "train" else split
    stream = Stream(data, trainer.device)
    return prepare_split(trainer, stream.probe(trainer.model)), stream


def prepare_split(trainer, split: Split) -> Split:
    """Check ``split`` against the model, building a spec model and optimizer on first sight.

    The first split (the training data) sets the run: its task, and the number of outputs (for classification,
    the number of classes) the model is built with. A later split (validation, evaluation) is checked against the
    run's model, not its own labels (:func:`~descend.train.checks.check_split`)."""
    fit, first = trainer.fit_state, trainer.task is None
    if first:
        trainer.task, trainer.target_scaler = split.task, split.target_scaler
        trainer.loss = resolve_loss(trainer.loss, split.task)
        trainer.metrics = metric_fns.check(trainer.metrics, split.task)
        fit.loss_fn = loss_function(trainer.loss)
        if isinstance(trainer.loss, nn.Module):
            trainer.loss.to(trainer.device)
    elif split.task != trainer.task:
        raise UserError(f"this trainer learns a {trainer.task} task but was given {split.task} data")
    outputs = check_split(split, trainer.loss, first)
    if trainer.model is None:
        rng.seed_torch(trainer.seed)
        trainer.model = fit.model_spec.build(tuple(split.x.shape[1:]), outputs)
    trainer.model.to(trainer.device)
    if trainer.optimizer is None:
        trainer.optimizer = fit.optimizer_spec.build(trainer.model)
    if is_integer(split.x):  # integer inputs as the model takes them: ids stay integers, pixels become float32
        split = replace(split, x=split.x.to(model_inputs(trainer.model, split.x, trainer.device)))
    check_model(trainer.model, split, trainer.loss, outputs, trainer.device)
    split = split.to(trainer.device)
    layout, _ = hardware.layout_choice(trainer.channels_last, trainer.device.type, trainer.model, split.x)
    return speed.channels_last(trainer.model, split) if layout else split


def decide_speed(trainer) -> hardware.Settings:
    """The speed settings a fit with the data of the last prepare() would choose now (:func:`hardware.decide`)."""
    if trainer.fit_state.plan is None:
        raise UserError("decide_speed() needs the data: call prepare() or fit() first")
    automatic = "auto" in (trainer.precision, trainer.threads) or trainer.channels_last == "auto"
    batches = trainer.fit_state.plan.batches
    sample = next(iter(batches.epoch(0)))[0] if automatic else None  # for the estimate of a step's work
    return hardware.decide(trainer.device, precision=trainer.precision, channels_last=trainer.channels_last,
                           threads=trainer.threads, deterministic=trainer.deterministic, model=trainer.model,
                           sample=sample)


def choose_speed(trainer, saved: dict | None) -> None:
    """Decide precision, layout and threads for this fit (``trainer.speed``, and fp16's gradient scaler); a resumed
    fit keeps the precision and, when deterministic, the thread count its checkpoint ``saved`` recorded."""
    trainer.speed = decide_speed(trainer)
    if isinstance(saved, dict) and saved.get("speed"):
        trainer.speed = hardware.resumed(trainer.speed, saved["speed"], deterministic=trainer.deterministic)
    fit = trainer.fit_state
    fit.scaler = hardware.gradient_scaler(trainer.speed.precision, fit.scaler, trainer.optimizer, trainer.device)
