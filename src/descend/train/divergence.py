"""The divergence watch: notice a non-finite loss without a host sync per step, and what to do about it.

:class:`Watch` holds the step losses (device tensors, no kernel per step) and reads them in one host sync every
``log_every`` steps, at every epoch end and before every checkpoint, to find the first step whose loss was not
finite. A non-finite loss raises :class:`~descend.errors.DivergenceError`; with ``on_divergence="rollback"`` the
trainer reloads its last checkpoint and halves the learning rate instead (:func:`roll_back`), up to
``max_rollbacks`` times.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..errors import DivergenceError
from . import checkpoint

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

    def check(self, epoch: int) -> float:
        """The last finite loss; raises :class:`DivergenceError` if a loss was not finite (one host sync)."""
        if self._diverged is not None:
            raise self._diverged
        if self._pending:
            losses = torch.stack(self._pending).double().tolist()
            self._pending = []
            for index, value in enumerate(losses):
                if not math.isfinite(value):
                    self._diverged = DivergenceError(
                        f"training diverged: the loss became non-finite at step {self.step + index} (epoch {epoch}); "
                        f"the last finite loss was {self.last_finite:.6g}. Try a lower learning rate, gradient "
                        f"clipping (clip_grad_norm), or check the data for extreme values.")
                    raise self._diverged
                self.last_finite = value
            self.step += len(losses)
        return self.last_finite


def can_roll_back(trainer) -> bool:
    keeper = trainer.checkpoints
    return (trainer.on_divergence == "rollback" and trainer.rollbacks < trainer.max_rollbacks
            and keeper is not None and keeper.last.is_file())


def roll_back(trainer, diverged: DivergenceError) -> None:
    """Reload the last checkpoint into ``trainer`` and halve its learning rate (``on_divergence="rollback"``)."""
    rollbacks, last = trainer.rollbacks + 1, trainer.checkpoints.last
    trainer.load_state_dict(checkpoint.load(last, device=trainer.device))
    trainer.rollbacks = rollbacks
    trainer._base_lrs = [lr * 0.5 for lr in trainer._base_lrs]
    warnings.warn(f"{diverged} Rolled back to {last} (epoch {trainer.epoch}, step {trainer.global_step}) with the "
                  f"learning rate halved to {trainer._base_lrs[0]:.3g} (rollback {rollbacks} of "
                  f"{trainer.max_rollbacks}).", RuntimeWarning, stacklevel=3)
