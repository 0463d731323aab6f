"""In-memory batches: index slices of a split's tensors on their device, reshuffled every epoch.

Batch size decides the kind of gradient descent: ``"full"`` gives one batch of all N samples
(full-batch gradient descent), ``1`` gives N batches of one sample (stochastic gradient descent), and any
other B gives ⌈N/B⌉ mini-batches (⌊N/B⌋ with ``drop_last``, which drops the last, smaller one).

The order of an epoch is a pure function of ``(seed, epoch)``: a permutation drawn from a CPU
``torch.Generator`` seeded with both, so a run resumed at any epoch and batch sees the very same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from descend.data.core import Split
from descend.errors import UserError


def _batch_size(value: int | str, n: int, drop_last: bool) -> int | None:
    """The batch size as an int, or ``None`` for "full"."""
    if isinstance(value, str):
        if value == "full":
            return None
        if not value.strip().isdigit():
            raise UserError(f"batch_size must be a positive integer or 'full', got {value!r}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserError(f"batch_size must be a positive integer or 'full', got {value!r}")
    if value > n and drop_last:
        raise UserError(
            f"batch_size {value} is larger than the split ({n} samples) and drop_last is on, "
            "so no batch would remain; lower batch_size or set drop_last=false"
        )
    return int(value)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed mixing ``seed`` and ``epoch`` (numpy's SeedSequence hash: distinct pairs give
    unrelated streams)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


class Batches:
    """The batches of ``split`` for each epoch.

    >>> batches = Batches(data.train, 128, seed=0)
    >>> for epoch in range(epochs):
    ...     for x, y in batches.epoch(epoch):
    ...         ...
    """

    def __init__(
        self,
        split: Split,
        batch_size: int | str,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        n = len(split)
        if n == 0:
            raise UserError("cannot make batches of an empty split")
        for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise UserError(f"{name} must be true or false, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserError(f"seed must be an integer >= 0, got {seed!r}")
        self.split = split
        self.size = _batch_size(batch_size, n, drop_last)
        self.full = self.size is None or (self.size >= n and not drop_last)
        self.batch_size = n if self.size is None else min(self.size, n)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = int(seed)

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (CPU int64): a seeded permutation, or 0..N-1 without shuffling."""
        _check_epoch(epoch)
        n = len(self.split)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator(device="cpu").manual_seed(epoch_seed(self.seed, int(epoch)))
        return torch.randperm(n, generator=g)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches ``(x, y)`` of ``epoch``, from batch index ``start`` on (to resume inside an epoch).

        Arguments are checked here, at the call, not at the first batch."""
        _check_epoch(epoch)
        count = len(self)
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start <= count:
            raise UserError(f"start must be an integer in [0, {count}], got {start!r}")
        if self.full:
            # full-batch gradient descent: the whole split as it is, no gather (a mean loss is order-free)
            return iter([(self.split.x, self.split.y)] if start == 0 else [])
        return self._slices(self.order(epoch), int(start))

    def _slices(self, order: torch.Tensor, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = order.to(self.split.x.device)  # one host-to-device copy per epoch
        x, y = self.split.x, self.split.y
        for idx in order.split(self.batch_size)[start:len(self)]:  # the epoch's index views, made in one op
            yield x.index_select(0, idx), y.index_select(0, idx)


def _check_epoch(epoch: object) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise UserError(f"epoch must be an integer >= 0, got {epoch!r}")
