"""Each process's share of every global batch: contiguous chunks of one shared permutation, without padding."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data import Batches, Split
from ..errors import UserError


class ShardedBatches(Batches):
    """Rank ``rank``'s chunks of the global batches of ``split`` (see :mod:`descend.dist`).

    Every rank draws the same permutation for an epoch (:meth:`Batches.order`, seeded by ``(seed, epoch)``), cuts
    each global batch of ``batch_size`` samples into ``world`` contiguous chunks whose sizes differ by at most one,
    and keeps chunk ``rank``. ``weight`` is the running chunk's share of its global batch (the gradient all-reduce
    weights each rank by it).
    """

    def __init__(self, split: Split, batch_size: int | str, *, rank: int, world: int, **options) -> None:
        super().__init__(split, batch_size, **options)
        self.rank, self.world = rank, world
        self.full = False  # even one global batch is cut into chunks
        sizes = {min(self.batch_size, len(split) - i * self.batch_size) for i in range(len(self))}
        if min(sizes) < world:
            raise UserError(f"a batch of {min(sizes)} samples cannot be shared by {world} processes (each needs at "
                            f"least one sample): choose a batch_size that leaves a last batch of at least {world}, "
                            f"or set drop_last = true")
        self.weight = 1.0 / world

    def _slices(self, order: torch.Tensor, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = order.to(self.split.x.device)  # one host-to-device copy per epoch
        x, y = self.split.x, self.split.y
        for batch in order.split(self.batch_size)[start:len(self)]:
            chunk = batch.tensor_split(self.world)[self.rank]
            self.weight = len(chunk) / len(batch)
            yield x.index_select(0, chunk), y.index_select(0, chunk)
