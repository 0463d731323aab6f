"""The trainer's passes in eval mode: loss and metrics over a split, and predictions.

Both run under ``torch.inference_mode()`` with dropout off and batch norm on its running statistics, and put the
model back in the mode it was in.
"""

from __future__ import annotations

import torch

from ..data import Split
from ..data.core import as_tensor
from ..errors import UserError
from .dataloaders import Stream
from .inputs import data_pairs
from .preparation import prepare_data


class Evaluation:
    """:class:`~descend.train.Trainer`'s evaluation methods (a mixin: they read its model, loss and device)."""

    def evaluate(self, data, y=None, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        """Mean loss and metrics over ``data`` in eval mode (dropout off, batch norm on running statistics);
        ``evaluate(x, y)`` with inputs and targets as arrays, as Keras takes them, is ``evaluate((x, y))``."""
        data, _ = data_pairs(data, y, None)
        return self._evaluate(prepare_data(self, data, "data")[1], batch_size=batch_size, prefix=prefix)

    @torch.inference_mode()
    def _evaluate(self, data: Split | Stream, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        batches = data.epoch(0) if isinstance(data, Stream) else in_order(data, batch_size)
        sums, was_training = self._metric_sums(), self.model.training
        self.model.eval()
        try:
            for x, y in batches:
                with self._autocast():
                    out = self.model(x)
                    sums.update(out, y, self._loss_fn(out, y))
        finally:
            self.model.train(was_training)
        return sums.compute(prefix)

    @torch.inference_mode()
    def predict(self, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
        """The model's outputs (logits for classifiers) for inputs ``x``, in eval mode, on x's device."""
        if self.model is None:
            raise UserError("the model is not built yet: call fit() first, or pass a torch.nn.Module")
        x = as_tensor(x)
        dtype = self._input_dtype(x)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                outs = [self.model(x[i:i + batch_size].to(self.device, dtype)).float()
                        for i in range(0, len(x), batch_size)]
        finally:
            self.model.train(was_training)  # also when a batch fails
        return torch.cat(outs).to(x.device)

    def _input_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype the model takes: that of the data it was trained on (integer token ids for an embedding stay
        integers; integer pixels a fit read as float32 become float32), else float32 for floating inputs and
        the inputs' own dtype for integers."""
        if self.fit_state.plan is not None:
            return self.fit_state.plan.split.x.dtype  # the training split the last fit prepared
        return torch.float32 if x.is_floating_point() else x.dtype


def in_order(split: Split, batch_size: int):
    """The split's ``(x, y)`` batches in order, as views (evaluation reads them; gathering copies would cost)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    return ((split.x[i:i + batch_size], split.y[i:i + batch_size]) for i in range(0, len(split), batch_size))
