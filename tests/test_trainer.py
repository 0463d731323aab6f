"""The training loop: it does exactly the steps it claims, accepts plain torch parts, and checks its input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import descend as ds
from descend.data import Split
from descend.train.callbacks import Callback
from descend.train.rng import seed_torch


def blobs(n=64, d=5, classes=3, seed=0):
    """Gaussian clusters around fixed centers; ``seed`` draws the samples."""
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 3
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return Split(centers[y] + torch.randn(n, d, generator=g), y, "classification", classes)


def test_full_batch_sgd_is_exactly_gradient_descent():
    """batch_size="full" + plain SGD must be w ← w − η∇L(w) on the whole set, step for step (bit-identical)."""
    data = blobs()
    torch.manual_seed(1)
    model = nn.Linear(5, 3)
    reference = nn.Linear(5, 3)
    reference.load_state_dict(model.state_dict())
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    trainer.fit(data, epochs=7, batch_size="full")
    for _ in range(7):
        loss = nn.functional.cross_entropy(reference(data.x), data.y)
        grads = torch.autograd.grad(loss, list(reference.parameters()))
        with torch.no_grad():
            for p, g in zip(reference.parameters(), grads):
                p.add_(g, alpha=-0.1)   # the same primitive torch's SGD uses, so rounding agrees bit for bit
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert trainer.global_step == 7 and len(trainer.history) == 7


def test_fit_learns_and_logs_each_epoch():
    train, val = blobs(seed=0), blobs(seed=1, n=32)
    model = ds.models.mlp([16], input_shape=(5,), num_outputs=3)
    trainer = ds.Trainer(model, optimizer=ds.optim.create("adam", lr=0.05), device="cpu")
    history = trainer.fit(train, val, epochs=15, batch_size=16)
    assert history["train_loss"][-1] < history["train_loss"][0] / 4
    assert history[-1]["val_accuracy"] > 0.9
    assert [row["epoch"] for row in history] == list(range(1, 16))  # epochs count from 1, as printed
    assert history[-1]["step"] == 15 * 4
    assert set(trainer.evaluate(val)) == {"loss", "accuracy"}
    assert trainer.predict(val.x).shape == (32, 3)


def test_model_spec_is_built_from_the_data_with_the_seed():
    specs = [ds.models.mlp([8]) for _ in range(2)]
    weights = []
    for spec in specs:
        trainer = ds.Trainer(spec, device="cpu", seed=3)
        trainer.fit(blobs(), epochs=1, batch_size=32)
        weights.append(torch.cat([p.flatten() for p in trainer.model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_seeding_draws_what_torch_manual_seed_draws():
    """descend seeds only the back-ends present (torch.manual_seed also queues seedings for absent ones)."""
    seed_torch(11)
    ours = torch.rand(5), torch.randn(3)
    torch.manual_seed(11)
    assert torch.equal(ours[0], torch.rand(5)) and torch.equal(ours[1], torch.randn(3))


def test_regression_metrics_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=g)
    y = (x @ torch.tensor([[1.5], [-2.0]]) + 0.1 * torch.randn(50, 1, generator=g))
    model = nn.Linear(2, 1)
    trainer = ds.Trainer(model, device="cpu")
    logs = trainer.evaluate((x, y))
    with torch.no_grad():
        pred = model(x)
    mse = ((pred - y) ** 2).mean().item()
    assert logs["mse"] == pytest.approx(mse, rel=1e-6)
    assert logs["loss"] == pytest.approx(mse, rel=1e-6)
    assert logs["mae"] == pytest.approx((pred - y).abs().mean().item(), rel=1e-6)
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert logs["r2"] == pytest.approx(r2.item(), rel=1e-6)


def test_binary_cross_entropy_uses_one_output():
    data = blobs(classes=2)
    trainer = ds.Trainer(ds.models.mlp([8]), loss="binary_cross_entropy", device="cpu",
                         optimizer=ds.optim.create("adam", lr=0.05))
    trainer.fit(data, epochs=20, batch_size=16)
    assert trainer.model(data.x[:1]).shape == (1, 1)
    assert trainer.evaluate(data)["accuracy"] > 0.9


def test_events_arrive_in_order():
    seen = []

    class Recorder(Callback):
        def on_fit_start(self, t):
            seen.append("fit_start")

        def on_epoch_start(self, t):
            seen.append(f"epoch_start {t.epoch}")

        def on_batch_end(self, t):
            seen.append(f"batch {t.global_step}")

        def on_epoch_end(self, t, logs):
            seen.append(f"epoch_end {t.epoch} {logs['step']}")

        def on_fit_end(self, t):
            seen.append("fit_end")

    ds.Trainer(nn.Linear(5, 3), callbacks=[Recorder()], device="cpu").fit(blobs(n=8), epochs=2, batch_size=4)
    assert seen == ["fit_start", "epoch_start 0", "batch 1", "batch 2", "epoch_end 0 2",
                    "epoch_start 1", "batch 3", "batch 4", "epoch_end 1 4", "fit_end"]


def test_a_callback_can_stop_training():
    class StopAfterTwo(Callback):
        def on_epoch_end(self, t, logs):
            t.stop_training = t.epoch == 1

    history = ds.Trainer(nn.Linear(5, 3), callbacks=[StopAfterTwo()], device="cpu").fit(blobs(), epochs=10)
    assert len(history) == 2


def test_bf16_autocast_trains():
    trainer = ds.Trainer(ds.models.mlp([16]), precision="bf16", device="cpu",
                         optimizer=ds.optim.create("adam", lr=0.05))
    history = trainer.fit(blobs(), epochs=10, batch_size=16)
    assert history["train_loss"][-1] < history["train_loss"][0]


@pytest.mark.parametrize("bad, message", [
    (Split(torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 0, 1, 2, 0]), "classification", 3), "labels"),
    (Split(torch.randn(8, 4), torch.zeros(8, dtype=torch.long), "classification", 3), "per-sample shape (4,)"),
    (Split(torch.full((8, 5), math.nan), torch.zeros(8, dtype=torch.long), "classification", 3), "NaN"),
    (Split(torch.randn(8, 5), torch.zeros(8, dtype=torch.long), "classification", 4), "outputs of shape (3,)"),
])
def test_bad_data_is_a_user_error(bad, message):
    with pytest.raises(ds.UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ds.Trainer(nn.Linear(5, 3), device="cpu").fit(bad, epochs=1)


def test_divergence_stops_with_the_step_and_last_finite_loss():
    """Least squares with a step far above 2/L: the loss grows geometrically until it overflows."""
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0)) * 10
    model = nn.Linear(5, 1)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=10.0), device="cpu")
    with pytest.raises(ds.DivergenceError, match=r"non-finite at step \d+.*last finite loss was [0-9.e+]+"):
        trainer.fit((x, x.sum(1, keepdim=True)), epochs=50, batch_size=8)


def test_gradient_clipping_bounds_the_step_and_logs_the_norm():
    model = nn.Linear(5, 3)
    trainer = ds.Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), clip_grad_norm=1e-3,
                         device="cpu")
    before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
    trainer.fit(blobs(), epochs=1, batch_size="full")
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 1e-3 * (1 + 1e-5)   # one SGD step of lr 1 on a gradient clipped to 1e-3
    assert trainer.history[0]["grad_norm"] > 1e-3          # logged before clipping


def test_a_fresh_data_pair_is_never_taken_for_an_earlier_one():
    # (x, y) tuples made for each call: the first one is freed after its fit, and its id may be reused by the next
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    trainer = ds.Trainer(torch.nn.Linear(4, 2), threads=1)
    trainer.fit((x[:8], y[:8]), epochs=1, batch_size=8, progress=False)
    trainer.fit((x, y), epochs=1, batch_size=8, progress=False)
    assert trainer.global_step == 1 + 8 and trainer.history[-1]["step"] == 9


def test_evaluation_reads_the_data_in_batches_and_puts_the_mode_back():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    trainer, data = ds.Trainer(model, device="cpu"), blobs(n=70)
    with torch.no_grad():
        out = model.eval()(data.x)
    want = {"loss": torch.nn.functional.cross_entropy(out, data.y).item(),
            "accuracy": (out.argmax(1) == data.y).double().mean().item()}
    model.train()
    for batch_size in (1, 16, 70, 1024):
        assert trainer.evaluate(data, batch_size=batch_size) == pytest.approx(want, rel=1e-6)
        assert model.training
    with pytest.raises(ds.UserError, match="batch_size must be a positive integer, got 0"):
        trainer.evaluate(data, batch_size=0)
    assert model.training and torch.equal(data.x, blobs(n=70).x)  # the data read as views is untouched


class _FailsOnBigBatches(nn.Linear):
    def forward(self, x):
        if len(x) > 2:  # the two-sample shape check passes; the evaluation's first batch fails
            raise RuntimeError("out of memory")
        return super().forward(x)


def test_a_failing_evaluation_batch_puts_the_mode_back():
    model = nn.Sequential(_FailsOnBigBatches(5, 3))
    with pytest.raises(RuntimeError, match="out of memory"):
        ds.Trainer(model, device="cpu").evaluate(blobs(n=70), batch_size=16)
    assert model.training
