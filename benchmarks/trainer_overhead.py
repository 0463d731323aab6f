"""The trainer's overhead: descend's Trainer against a hand-written PyTorch loop doing the same work.

    PYTHONPATH=src python -m benchmarks.trainer_overhead [--epochs 5] [--repeats 3] [--batch-size 128]

Both train the quickstart model (cnn1d [64, 64, 64] with batch norm) on MNIST-1D with the same fused AdamW,
in-memory index batches and losses accumulated on the device; the raw loop is the leanest loop one would write by
hand, with no validation. The Trainer runs with no validation data either, so the difference is the loop's own
cost (events, metric sums, learning-rate writes, divergence watch). Epoch times are medians over the repeats; the
two loops alternate so a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import descend as ds


def raw_epochs(data, epochs: int, batch_size: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = ds.models.cnn1d([64, 64, 64], batch_norm=True, input_shape=(40,), num_outputs=10)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05, fused=True)
    x, y, n = data.x, data.y, len(data)
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        total = torch.zeros(())
        for i in range(0, n, batch_size):
            index = order[i:i + batch_size]
            xb, yb = x.index_select(0, index), y.index_select(0, index)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(index)
        (total / n).item()
        times.append(time.perf_counter() - started)
    return times


def trainer_epochs(data, epochs: int, batch_size: int, seed: int) -> list[float]:
    model = ds.models.cnn1d([64, 64, 64], batch_norm=True)
    trainer = ds.Trainer(model, optimizer=ds.optim.create("adamw", lr=2e-3, weight_decay=0.05), device="cpu",
                         seed=seed)
    history = trainer.fit(data, epochs=epochs, batch_size=batch_size)
    return history["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    data = ds.data.load("mnist1d", val_fraction=0.1).train
    raw, ours = [], []
    for repeat in range(args.repeats):
        # the first epoch of each run warms up allocators and kernels; it is left out of both sides
        raw += raw_epochs(data, args.epochs, args.batch_size, repeat)[1:]
        ours += trainer_epochs(data, args.epochs, args.batch_size, repeat)[1:]
    r, t = statistics.median(raw), statistics.median(ours)
    print(f"torch {torch.__version__}, cpu, {torch.get_num_threads()} threads; MNIST-1D train split "
          f"({len(data)} samples), batch {args.batch_size}; median epoch of {len(raw)} per side")
    print(f"{'loop':<22}{'s / epoch':>12}{'ratio':>9}")
    print(f"{'raw PyTorch loop':<22}{r:>12.3f}{1.0:>8.2f}x")
    print(f"{'descend Trainer':<22}{t:>12.3f}{t / r:>8.2f}x")


if __name__ == "__main__":
    main()
