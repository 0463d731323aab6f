"""Batches: full-batch / SGD / mini-batch, drop_last, seeded per-epoch order, resume with `start`."""

from __future__ import annotations

import pytest
import torch

from descend.data import Batches, Split
from descend.errors import UserError


def _split(n: int = 10) -> Split:
    # x carries the row index, so every batch tells which samples it holds
    return Split(
        x=torch.arange(n, dtype=torch.float32)[:, None],
        y=torch.arange(n),
        task="classification",
        num_classes=n,
    )


def _rows(batches: Batches, epoch: int, start: int = 0) -> list[list[int]]:
    out = []
    for x, y in batches.epoch(epoch, start):
        assert torch.equal(x[:, 0].long(), y)  # inputs and targets are sliced with the same indices
        out.append(y.tolist())
    return out


def test_full_batch_is_the_whole_split_once():
    s = _split(10)
    b = Batches(s, "full")
    assert len(b) == 1
    ((x, y),) = list(b.epoch(0))
    assert x is s.x and y is s.y  # full-batch gradient descent: no copy, no gather
    assert list(b.epoch(0, start=1)) == []


def test_batch_size_one_is_sgd_over_every_sample():
    b = Batches(_split(7), 1, seed=1)
    rows = _rows(b, 0)
    assert len(b) == 7 and all(len(r) == 1 for r in rows)
    assert sorted(r[0] for r in rows) == list(range(7))


@pytest.mark.parametrize(
    "n, size, drop_last, sizes",
    [
        (10, 3, False, [3, 3, 3, 1]),
        (10, 3, True, [3, 3, 3]),
        (9, 3, True, [3, 3, 3]),
        (10, 10, True, [10]),
        (5, 8, False, [5]),
    ],
)
def test_mini_batch_sizes_and_drop_last(n, size, drop_last, sizes):
    b = Batches(_split(n), size, drop_last=drop_last, seed=0)
    rows = _rows(b, 2)
    assert len(b) == len(sizes)
    assert [len(r) for r in rows] == sizes
    flat = [i for r in rows for i in r]
    assert len(set(flat)) == len(flat)  # no sample twice in an epoch
    if not drop_last:
        assert sorted(flat) == list(range(n))  # every sample once per epoch


def test_every_index_once_per_epoch_over_many_epochs():
    b = Batches(_split(50), 8, seed=5)
    for epoch in range(5):
        flat = [i for r in _rows(b, epoch) for i in r]
        assert sorted(flat) == list(range(50))


def test_new_order_each_epoch_same_order_for_same_seed():
    s = _split(40)
    a, b, c = Batches(s, 8, seed=3), Batches(s, 8, seed=3), Batches(s, 8, seed=4)
    orders = [a.order(e).tolist() for e in range(4)]
    assert len({tuple(o) for o in orders}) == 4  # reshuffled every epoch (40! orders: a repeat means a bug)
    assert [b.order(e).tolist() for e in range(4)] == orders
    assert c.order(0).tolist() != orders[0]


def test_order_is_a_pure_function_of_seed_and_epoch():
    s = _split(30)
    a = Batches(s, 4, seed=7)
    for e in range(3):  # consuming earlier epochs must not change a later one (resume at epoch 3)
        list(a.epoch(e))
    assert torch.equal(a.order(3), Batches(s, 4, seed=7).order(3))
    g = torch.Generator().manual_seed(123)
    torch.randperm(30, generator=g)  # nor does any other random stream
    torch.manual_seed(99)
    assert torch.equal(a.order(3), Batches(s, 4, seed=7).order(3))


def test_batches_follow_the_order():
    b = Batches(_split(10), 4, seed=2)
    order = b.order(1).tolist()
    assert _rows(b, 1) == [order[0:4], order[4:8], order[8:10]]


@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_start_is_the_tail_of_the_full_epoch(start):
    b = Batches(_split(23), 5, seed=9)
    full = _rows(b, 4)
    assert _rows(b, 4, start) == full[start:]


def test_no_shuffle_is_identity_order():
    b = Batches(_split(10), 4, shuffle=False)
    assert _rows(b, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert _rows(b, 5) == _rows(b, 0)


def test_numeric_string_batch_size():
    assert len(Batches(_split(10), "4")) == 3


@pytest.mark.parametrize(
    "size, drop_last",
    [
        (0, False),
        (-2, False),
        (11, True),
        ("abc", False),
        ("", False),
        (True, False),
        (2.5, False),
        (None, False),
    ],
)
def test_invalid_batch_sizes(size, drop_last):
    with pytest.raises(UserError, match="batch_size"):
        Batches(_split(10), size, drop_last=drop_last)


def test_invalid_start_epoch_and_flags():
    b = Batches(_split(10), 3)
    with pytest.raises(UserError, match=r"start must be an integer in \[0, 4\], got 5"):
        b.epoch(0, start=5)  # raised at the call, before any batch is asked for
    with pytest.raises(UserError, match="epoch must be an integer >= 0, got -1"):
        b.epoch(-1)
    with pytest.raises(UserError, match="epoch"):
        Batches(_split(10), "full").epoch(-1)
    with pytest.raises(UserError, match="seed"):
        Batches(_split(10), 3, seed=-1)
    with pytest.raises(UserError, match="drop_last"):
        Batches(_split(10), 3, drop_last="yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_stay_on_the_device_with_the_cpu_order():
    s = _split(20)
    cpu, gpu = Batches(s, 6, seed=1), Batches(s.to("cuda"), 6, seed=1)
    for (xc, yc), (xg, yg) in zip(cpu.epoch(3), gpu.epoch(3), strict=True):
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        assert torch.equal(yc, yg.cpu()) and torch.equal(xc, xg.cpu())
