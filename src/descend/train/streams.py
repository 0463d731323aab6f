"""Data that does not fit in memory: ``Trainer.fit`` also takes a torch ``DataLoader`` or any re-iterable of
``(x, y)`` batches, read batch by batch and moved to the device as it comes.

What that costs, against in-memory data (a :class:`~descend.data.Split`, sliced on the device):

- the loader's own overhead (workers, collation, host-to-device copies each step);
- the order of the batches is the loader's: ``shuffle`` and ``drop_last`` of ``fit`` do not apply (set them on the
  loader);
- the data checks (finite inputs, label range, model shapes) see the first batch only;
- exact resume holds only for a loader whose order is a function of the epoch (no shuffling, or a sampler seeded
  per epoch): a resumed run reads and skips the batches done before the stop;
- a classifier's number of classes is the width of the model's output, so the model must be a ready
  ``torch.nn.Module`` (build a spec with ``spec.build(input_shape, num_classes)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from ..data import Split
from ..errors import UserError


def is_stream(data) -> bool:
    """Whether ``data`` is batches to iterate (a DataLoader, a list of ``(x, y)`` batches), not a split or pair."""
    if isinstance(data, (Split, torch.Tensor)) or not isinstance(data, Iterable):
        return False
    if isinstance(data, Sequence) and len(data) == 2 and not isinstance(data[0], (tuple, list)):
        return False  # an (x, y) pair of tensors or arrays
    return True


class Stream:
    """Batches of a re-iterable source on ``device``, with the interface of :class:`~descend.data.Batches`."""

    def __init__(self, source, device: torch.device):
        if iter(source) is source:
            raise UserError("the training data is a one-shot iterator (a generator?); give a DataLoader, a list of "
                            "(x, y) batches, or an object whose __iter__ starts over every epoch")
        self.source, self.device = source, device
        self._len = len(source) if hasattr(source, "__len__") else sum(1 for _ in source)  # one counting pass
        if self._len == 0:
            raise UserError("the data has no batches")

    def __len__(self) -> int:
        return self._len

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of an epoch from batch ``start`` on (earlier ones are read and skipped)."""
        for index, batch in enumerate(self.source):
            if index >= start:
                yield self._pair(batch)

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise UserError(f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
        x, y = (torch.as_tensor(v) for v in batch)
        x = x.to(self.device, non_blocking=True)
        return (x.float() if not x.is_floating_point() else x), y.to(self.device, non_blocking=True)

    def probe(self, model: torch.nn.Module | None) -> Split:
        """The first batch as a split, for the trainer's checks (task from the targets' type)."""
        x, y = self._pair(next(iter(self.source)))
        if y.is_floating_point():
            return Split(x.float(), y.float(), "regression")
        if model is None:
            raise UserError("with a DataLoader the model must be a ready torch.nn.Module (the number of classes is "
                            "its output width); build a spec with spec.build(input_shape, num_classes)")
        with torch.no_grad():
            was_training = model.training
            classes = int(model.eval().to(self.device)(x[:2]).shape[1])
            model.train(was_training)
        return Split(x, y.long(), "classification", max(classes, 2))
