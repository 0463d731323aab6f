"""Each process's share of every global batch: contiguous chunks of one shared permutation, without padding."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data import Batches, Split
from ..errors import UserError


class ShardedBatches(Batches):
    """Rank ``rank``'s chunks of the global batches of ``split`` (see :mod:`descend.distributed`).

    Every rank draws the same permutation for an epoch (:meth:`Batches.order`, seeded by ``(seed, epoch)``), cuts
    each global batch of ``batch_size`` samples into ``world`` contiguous chunks whose sizes differ by at most one,
    and keeps chunk ``rank``. ``weight`` is the running chunk's share of its global batch (the gradient all-reduce
    weights each rank by it): its share of the samples, or with ``class_weights`` (a weighted cross-entropy, whose
    mean divides by the batch's Σ w[y]) its share of Σ w[y] — a tensor then, computed on the device without a sync.
    Either way the weighted sum of the chunks' mean losses is the global batch's mean loss, so a step is the
    one-process step.
    """

    def __init__(self, split: Split, batch_size: int | str, *, rank: int, world: int,
                 class_weights: torch.Tensor | None = None, **options) -> None:
        super().__init__(split, batch_size, **options)
        self.rank, self.world = rank, world
        self.class_weights = None if class_weights is None else class_weights.to(split.y.device, torch.float64)
        self.full = False  # even one global batch is cut into chunks
        sizes = {min(self.batch_size, len(split) - i * self.batch_size) for i in range(len(self))}
        if min(sizes) < world:
            raise UserError(f"a batch of {min(sizes)} samples cannot be shared by {world} processes (each needs at "
                            f"least one sample): choose a batch_size that leaves a last batch of at least {world}, "
                            f"or set drop_last = true")
        self.weight: float | torch.Tensor = 1.0 / world
        self.batch_samples = 0  # the running global batch's size

    def _slices(self, order: torch.Tensor, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = order.to(self.split.x.device)  # one host-to-device copy per epoch
        x, y = self.split.x, self.split.y
        for batch in order.split(self.batch_size)[start:len(self)]:
            chunk = batch.tensor_split(self.world)[self.rank]
            chunk_y, self.batch_samples = y.index_select(0, chunk), len(batch)
            if self.class_weights is None:
                self.weight = len(chunk) / len(batch)
            else:  # Σ w[y] over the chunk / over the batch: device ops, no host sync
                self.weight = self.class_weights[chunk_y].sum() / self.class_weights[y.index_select(0, batch)].sum()
            yield x.index_select(0, chunk), chunk_y
