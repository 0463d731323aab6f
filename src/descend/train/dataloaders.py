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

On a CUDA device each batch is copied from pinned (page-locked) host memory on a side stream, one batch ahead
(:func:`one_ahead`): the copy of batch i + 1 runs while batch i trains, and the compute stream waits for a batch's
copy only when it uses it. A loader with ``pin_memory=True`` saves the pinning copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from ..data import Split
from ..data.core import as_tensor
from ..errors import UserError
from .checks import model_inputs


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
        self.inputs = torch.float32  # the dtype integer inputs are read in (set by probe: the model decides)
        self._side = None  # the CUDA stream batches are copied on
        self._len = len(source) if hasattr(source, "__len__") else sum(1 for _ in source)  # one counting pass
        if self._len == 0:
            raise UserError("the data has no batches")

    def __len__(self) -> int:
        return self._len

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of an epoch from batch ``start`` on (earlier ones are read and skipped)."""
        batches = (batch for index, batch in enumerate(self.source) if index >= start)
        if self.device.type == "cuda":
            return one_ahead(batches, self._start_copy, self._finish_copy)
        return map(self._pair, batches)

    def _pair(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _tensors(batch)
        x = x.to(self.device, non_blocking=True)
        if not x.is_floating_point():
            x = x if x.dtype == self.inputs else x.to(self.inputs)
        return x, y.to(self.device, non_blocking=True)

    def _start_copy(self, batch):
        """Queue the batch's copy to the GPU on the side stream (from pinned memory, so the host goes on)."""
        if self._side is None:
            self._side = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._side):
            x, y = self._pair([_pinned(t) for t in _tensors(batch)])
            copied = torch.cuda.Event()
            copied.record(self._side)
        return x, y, copied

    def _finish_copy(self, started) -> tuple[torch.Tensor, torch.Tensor]:
        """The copied batch, for the compute stream: it waits for this copy only, and the tensors allocated on the
        side stream are kept from reuse until the compute stream is done with them."""
        x, y, copied = started
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(copied)
        x.record_stream(compute)
        y.record_stream(compute)
        return x, y

    def probe(self, model: torch.nn.Module | None) -> Split:
        """The first batch as a split, for the trainer's checks (task from the targets' type)."""
        first = next(iter(self.source))  # one read of the loader (its workers start once)
        self.inputs = model_inputs(model.to(self.device) if model is not None else None, _tensors(first)[0],
                                   self.device)
        x, y = self._pair(first)
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


def _tensors(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise UserError(f"each batch must be an (inputs, targets) pair, got {type(batch).__name__}")
    return as_tensor(batch[0]), as_tensor(batch[1])   # numpy batches: read-only ones copied


def _pinned(t: torch.Tensor) -> torch.Tensor:
    """A host tensor in page-locked memory (copied there unless it is already), so a copy from it is asynchronous."""
    return t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory()


def one_ahead(items: Iterable, start: Callable, finish: Callable) -> Iterator:
    """``finish(start(item))`` for each item in order, with ``start`` called on the next item before the current
    one is finished and handed out: the next batch's copy is under way while the caller trains on this one."""
    pending, has_pending = None, False
    for item in items:
        started = start(item)
        if has_pending:
            yield finish(pending)
        pending, has_pending = started, True
    if has_pending:
        yield finish(pending)
