"""The hot loop never waits for the host: no per-step read of a tensor's value (``.item()``, ``bool(t)``,
``.tolist()``, …), each of which is a device sync on an accelerator. Counted on the CPU by patching the ways a value
reaches Python: an update of a weight average makes none, and a fit with every per-step part on (EMA and SWA,
clipping, a penalty, extra metrics, a warmup schedule) makes as many in 40 steps as in 10 — the per-epoch reads only.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

import descend as ds
from descend import averaging


class HostReads:
    """Counts the ways a tensor's value reaches Python, by name."""

    NAMES = ("__bool__", "item", "tolist", "__int__", "__float__", "__index__", "cpu", "numpy")

    def __init__(self, monkeypatch):
        self.calls = collections.Counter()
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, _name=name, **kwargs):
                self.calls[_name] += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("method", ["ema", "swa"])
def test_an_update_of_the_average_never_reads_a_tensor_on_the_host(monkeypatch, method):
    model = bn_model()
    callback = averaging.create(method)
    callback.on_fit_start(type("T", (), {"model": model, "total_steps": 10, "steps_per_epoch": 1, "schedule": None})())
    reads = HostReads(monkeypatch)
    for _ in range(3):
        callback.update(model)
    assert not reads.calls and callback.updates == 3
    monkeypatch.undo()
    assert int(callback.averaged.n_averaged) == 3  # torch's own counter kept in step


@pytest.mark.parametrize("averaged", ["ema", "swa"])
def test_a_fit_reads_the_host_per_epoch_not_per_step(monkeypatch, averaged):
    def reads_of_a_fit(samples: int) -> collections.Counter:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(samples, 6, generator=g)
        y = (x[:, 0] > 0).long()
        trainer = ds.Trainer(
            bn_model(),
            optimizer=ds.optim.create("momentum", lr=0.1, momentum=0.9),  # torch's SGD keeps no step tensor
            schedule=ds.schedules.create("cosine", warmup_epochs=1),
            device="cpu",
            threads=1,
            log_every=10**6,
            clip_grad_norm=1.0,
            regularizer=ds.regularization.create("l2", strength=1e-3),
            metrics=["f1", "top5_accuracy"],
            # batch_norm="average": "recompute" adds a pass over the training data at the end, in which torch's
            # BatchNorm reads its batch count once per batch (a cumulative average): an epoch's pass, not a step's
            callbacks=[averaging.create(averaged, batch_norm="average")],
        )
        trainer.prepare((x, y), epochs=2, batch_size=10)  # building and checking read values: not the loop
        with monkeypatch.context() as patched:
            reads = HostReads(patched)
            trainer.fit((x, y), epochs=2, batch_size=10, progress=False)
        return reads.calls

    assert reads_of_a_fit(400) == reads_of_a_fit(100)  # 40 steps per epoch read what 10 do
