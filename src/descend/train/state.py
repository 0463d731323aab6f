"""The trainer's whole state, when it is written, and how a run continues from it.

A checkpoint holds everything the next step depends on: model, optimizer, schedule (with the plateau
controller), every callback's state, the RNG streams (python, numpy, torch CPU and CUDA, and the augmentation
generator), the data-order position (epoch and batches done; the order of an epoch is a function of the seed and
the epoch, so nothing else is needed), the base learning rates, the history, and the partial sums of the epoch
running, the speed settings the run chose (:mod:`descend.train.hardware`: a resumed run keeps them) and fp16's
gradient scale. Restoring all of it makes a resumed run end bit-identical to one that never stopped (CPU,
deterministic).

The values the fit itself keeps are its :class:`~descend.train.fit_state.FitState` (``trainer.fit_state``); the
rest are the model, optimizer, schedule and callbacks the user handed over. When it is written is the checkpoint
policy's business (:mod:`descend.train.checkpointing`); the file format
is :mod:`descend.train.checkpoint` (no pickle, atomic).
"""

from __future__ import annotations

import contextlib
import signal
import threading

import torch

from ..errors import UserError
from . import checkpoint, rng
from .callbacks import Callback
from .checkpointing import Checkpoints, find, has_checkpoint
from .history import History

__all__ = ["Checkpoints", "callback_keys", "capture", "find", "has_checkpoint", "restore", "stop_on_signals"]

def capture(trainer) -> dict:
    """The trainer's whole state (see the module docstring), as tensors and JSON values."""
    fit = trainer.fit_state
    return {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict() if trainer.schedule is not None else {},
        "callbacks": {key: cb.state_dict() for key, cb in callback_keys(trainer.callbacks).items()},
        "rng": {"streams": rng.capture(), "augment": fit.augment_rng.get_state()},
        "position": fit.position(),  # at an epoch's end the run continues with the next epoch
        "base_lrs": list(fit.base_lrs),
        "rollbacks": fit.rollbacks,
        "history": list(fit.history),
        "epoch_sums": fit.sums.state_dict(),
        "speed": trainer.speed.record() if trainer.speed is not None else {},  # reused on resume
        "scaler": fit.scaler.state_dict() if fit.scaler is not None else {},  # fp16's loss scale
    }


def restore(trainer, saved: dict) -> None:
    """Put ``saved`` (from :func:`capture`) back into ``trainer``; data and model must be those it was saved with."""
    checkpoint.check_state(saved, trainer, callback_keys(trainer.callbacks))  # every field, before torch sees any
    position = saved["position"]
    report = trainer.model.load_state_dict(saved["model"], strict=False)
    if report.missing_keys or report.unexpected_keys:
        raise UserError(f"the checkpoint's model does not match this model: missing {report.missing_keys}, "
                        f"unexpected {report.unexpected_keys}")
    trainer.optimizer.load_state_dict(saved["optimizer"])
    _match_layouts(trainer.optimizer)
    if trainer.schedule is not None and saved["schedule"]:
        trainer.schedule.load_state_dict(saved["schedule"])
    for key, cb in callback_keys(trainer.callbacks).items():
        if key in saved["callbacks"]:
            cb.load_state_dict(saved["callbacks"][key])
    rng.restore(saved["rng"]["streams"])
    fit = trainer.fit_state
    fit.augment_rng.set_state(saved["rng"]["augment"].cpu())
    fit.resume_at(position)  # the loss watch starts afresh at the position's step
    fit.base_lrs, fit.rollbacks = list(saved["base_lrs"]), saved["rollbacks"]
    fit.lr_written = [None] * len(fit.base_lrs)  # the loaded rates are the schedule's, not a change by user code
    fit.history = History(saved["history"])
    fit.sums.load_state_dict(saved["epoch_sums"])  # every sum, and none of the batches held for the next reduction
    if fit.scaler is not None and saved.get("scaler"):
        fit.scaler.load_state_dict(saved["scaler"])
    if trainer.checkpoints is not None:
        trainer.checkpoints.restore(saved)


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (momentum, moments) its parameter's memory layout. torch's
    ``load_state_dict`` keeps the checkpoint's contiguous strides, and the fused and foreach update kernels pair a
    parameter's elements with its state's by memory position: a channels-last parameter with an NCHW moment would
    be updated from the wrong elements after a resume."""
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def callback_keys(callbacks) -> dict[str, Callback]:
    """Callbacks named by class (and position among callbacks of the same class), for their saved state.

    The checkpoint callback is left out: its state travels in the checkpoint itself."""
    keys, seen = {}, {}
    for cb in callbacks:
        if isinstance(cb, Checkpoints):
            continue
        name = type(cb).__name__
        seen[name] = seen.get(name, -1) + 1
        keys[f"{name}.{seen[name]}" if seen[name] else name] = cb
    return keys


@contextlib.contextmanager
def stop_on_signals(trainer):
    """While fitting, SIGINT and SIGTERM ask the loop to stop at the next step boundary (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ask_to_stop(signum, frame):
        trainer.stop_signal = signum

    previous = {s: signal.signal(s, ask_to_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)

