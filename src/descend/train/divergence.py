"""The divergence watch: notice a non-finite loss without a host sync per step, and what to do about it.

:class:`Watch` holds the step losses (device tensors, no kernel per step) and reads them in one host sync every
``log_every`` steps, at every epoch end and before every checkpoint, to find the first step whose loss was not
finite. A non-finite loss raises :class:`~descend.errors.DivergenceError` naming what became non-finite
(:func:`culprit`); with ``on_divergence="rollback"`` the trainer reloads its last checkpoint and halves the
learning rate instead (:func:`roll_back`), up to ``max_rollbacks`` times.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..errors import DivergenceError
from . import checkpoint, lr

ACTIONS = ("stop", "rollback")


class Watch:
    """The step losses since the last check (held on the device), the last finite loss and the step count."""

    def __init__(self, step: int = 0):
        self.step = step          # steps checked so far
        self.last_finite = math.nan
        self._pending: list[torch.Tensor] = []
        self._diverged: DivergenceError | None = None   # raised again by every later check

    def update(self, loss: torch.Tensor) -> None:
        """Hold this step's loss (no device work; it is read at the next :meth:`check`)."""
        self._pending.append(loss.detach())

    def check(self, trainer) -> float:
        """The last finite loss; raises :class:`DivergenceError` if a loss was not finite (one host sync)."""
        if self._diverged is not None:
            raise self._diverged
        if self._pending:
            losses = torch.stack(self._pending).double().tolist()
            self._pending = []
            for index, value in enumerate(losses):
                if not math.isfinite(value):
                    last = self.last_finite
                    before = f"the last finite loss was {last:.6g}" if math.isfinite(last) else \
                        "no step had a finite loss"
                    step, epoch = self.step + index + 1, trainer.epoch + 1  # from 1, as in metrics.jsonl
                    self._diverged = DivergenceError(
                        f"training diverged: the loss became non-finite at step {step} (epoch {epoch}); {before}. "
                        f"{culprit(trainer)}")
                    self._diverged.step, self._diverged.epoch = step, epoch
                    raise self._diverged
                self.last_finite = value
            self.step += len(losses)
        return self.last_finite


def all_finite(tensors) -> bool:
    """Whether every floating-point value in ``tensors`` is finite (one host sync per device).

    One float64 sum per tensor: NaN and ±inf carry through a sum, and a float64 sum of finite float32 (or
    lower-precision) values cannot overflow, so a finite total means all values are finite. It reads each tensor
    once, where ``torch.isfinite(t).all()`` first writes a mask as large as the tensor. A total that is
    not finite is confirmed element by element (finite float64 values can sum past the float64 range).
    """
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        if t.is_floating_point() and t.numel():
            by_device.setdefault(t.device, []).append(t.detach())
    for group in by_device.values():
        total = torch.stack([t.sum(dtype=torch.float64) for t in group]).sum()
        if not bool(total.isfinite()) and not all(bool(torch.isfinite(t).all()) for t in group):
            return False
    return True


def check_weights(trainer) -> None:
    """Raise :class:`DivergenceError` if a weight is not finite (one host sync; the trainer asks once per epoch).

    A step's loss is computed before its update, so the loss watch sees weights that an epoch's last step made
    non-finite only at the next step; at the end of training there is none, and the validation and final
    metrics would be NaN.
    """
    if not all_finite(trainer.model.parameters()):
        raise DivergenceError(f"training diverged: the weights became non-finite by step {trainer.global_step} "
                              f"(epoch {trainer.epoch + 1}). {culprit(trainer)}")


def check_validation(trainer, logs: dict[str, float]) -> None:
    """Raise :class:`DivergenceError` if the validation loss is not finite: weights that are finite but so large
    that the outputs overflow (the training loss of a step is computed before its update)."""
    loss = logs.get("val_loss")
    if loss is not None and not math.isfinite(loss):
        raise DivergenceError(f"training diverged: the validation loss is {loss} after step {trainer.global_step} "
                              f"(epoch {trainer.epoch + 1}). {culprit(trainer)}")


def culprit(trainer) -> str:
    """What became non-finite, and the fix that goes with it (run once, when training has diverged)."""
    with torch.no_grad():
        train = trainer.fit_state.train
        if trainer.augment is not None and train is not None:  # the data itself was checked before
            x = train.x[:256]
            augmented = trainer.augment(x, torch.Generator(device=x.device).manual_seed(0))
            if not all_finite([augmented]):
                return ("The inputs became non-finite in augmentation (the data itself is finite): check the "
                        "augmentation's options (noise_std, scale).")
        bad = [name for name, t in trainer.model.state_dict().items() if not all_finite([t])]
        if bad:
            shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
            return (f"The weights became non-finite ({shown}): the steps were too large. Try a lower learning "
                    f"rate or gradient clipping (clip_grad_norm).")
    return ("The weights and inputs are finite; the loss itself overflowed. Try a lower learning rate, gradient "
            "clipping (clip_grad_norm), or check the data for extreme values.")


def can_roll_back(trainer) -> bool:
    keeper = trainer.checkpoints
    return (trainer.on_divergence == "rollback" and trainer.rollbacks < trainer.max_rollbacks
            and keeper is not None and keeper.last.is_file())


def roll_back(trainer, diverged: DivergenceError) -> None:
    """Reload the last checkpoint into ``trainer`` and halve its learning rate (``on_divergence="rollback"``).

    The k-th rollback runs at 0.5^k times the recipe's learning rate, whenever the checkpoint it reloads was
    written (before or after earlier rollbacks): the checkpoint records its own rollback count and rates."""
    rollbacks, last = trainer.rollbacks + 1, trainer.checkpoints.last
    trainer.load_state_dict(checkpoint.load(last, device=trainer.device))
    halvings = rollbacks - trainer.rollbacks  # the reloaded state already holds trainer.rollbacks halvings
    trainer.rollbacks = rollbacks
    lr.scale(trainer, 0.5**halvings)
    warnings.warn(f"{diverged} Rolled back to {last} (epoch {trainer.epoch}, step {trainer.global_step}) with the "
                  f"learning rate halved to {trainer.fit_state.base_lrs[0]:.3g} (rollback {rollbacks} of "
                  f"{trainer.max_rollbacks}).", RuntimeWarning, stacklevel=3)
