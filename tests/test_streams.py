"""Batches streamed from a DataLoader: on a GPU the next batch is copied (from pinned memory, on a side stream)
while the current one trains. The order of that pipeline is checked here on any machine; the copies themselves
only where CUDA is present."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend as ds
from descend.train.dataloaders import one_ahead


def test_the_next_item_is_started_before_the_current_one_is_handed_out():
    calls = []

    def start(item):
        calls.append(("start", item))
        return item * 10

    def finish(started):
        calls.append(("finish", started // 10))
        return started

    got = []
    for value in one_ahead(range(3), start, finish):
        got.append(value)
        calls.append(("train", value // 10))
    assert got == [0, 10, 20]
    assert calls == [("start", 0), ("start", 1), ("finish", 0), ("train", 0), ("start", 2), ("finish", 1),
                     ("train", 1), ("finish", 2), ("train", 2)]
    assert list(one_ahead([], start, finish)) == []
    assert list(one_ahead([4], start, finish)) == [40]


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _history(device, data, **options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    trainer = ds.Trainer(model, device=device, seed=0, optimizer=ds.optim.create("sgd", lr=0.1))
    return trainer.fit(data, epochs=2, **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the side-stream copies need a CUDA GPU")
@pytest.mark.parametrize("pin_memory", [False, True])
def test_streamed_batches_on_cuda_train_as_in_memory_ones(pin_memory):
    x, y = _data()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False, pin_memory=pin_memory)
    streamed, in_memory = _history("cuda", loader), _history("cuda", (x, y), batch_size=16, shuffle=False)
    for got, want in zip(streamed, in_memory, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
        assert got["train_accuracy"] == want["train_accuracy"]

