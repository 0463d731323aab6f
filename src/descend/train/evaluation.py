"""The trainer's passes in eval mode: loss and metrics over a split, and predictions.

Both run under ``torch.inference_mode()`` with dropout off and batch norm on its running statistics, and put the
model back in the mode it was in.
"""

from __future__ import annotations

import torch

from ..data import Batches, Split
from ..errors import UserError
from .checks import prepare_data
from .streams import Stream


class Evaluation:
    """:class:`~descend.train.Trainer`'s evaluation methods (a mixin: they read its model, loss and device)."""

    def evaluate(self, data, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        """Mean loss and metrics over ``data`` in eval mode (dropout off, batch norm on running statistics)."""
        return self._evaluate(prepare_data(self, data, "data")[1], batch_size=batch_size, prefix=prefix)

    @torch.inference_mode()
    def _evaluate(self, data: Split | Stream, *, batch_size: int = 1024, prefix: str = "") -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        sums = self._metric_sums()
        batches = data if isinstance(data, Stream) else Batches(data, min(batch_size, len(data)), shuffle=False)
        for x, y in batches.epoch(0):
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
