"""Batching speed: descend's in-memory index batches against ``DataLoader(TensorDataset)``, in samples per second.

    PYTHONPATH=src python -m benchmarks.data [--quick] [--epochs 5] [--repeats 5]

Both walk the MNIST-1D training split in a fresh random order every epoch and hand out ``(x, y)`` batches; nothing
is trained, so the figures are the batching cost alone. ``DataLoader`` fetches each sample on its own and collates
them (a Python call per sample); descend gathers a batch with one ``index_select`` per tensor. Each repeat times
both, alternating which goes first; the table shows medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

import descend as ds
from descend.data import Batches

from . import machine


def in_memory(split, batch: int, epochs: int) -> float:
    batches = Batches(split, batch, seed=0)
    started = time.perf_counter()
    for epoch in range(epochs):
        for _x, _y in batches.epoch(epoch):
            pass
    return time.perf_counter() - started


def data_loader(split, batch: int, epochs: int) -> float:
    loader = DataLoader(TensorDataset(split.x, split.y), batch_size=batch, shuffle=True)
    started = time.perf_counter()
    for _epoch in range(epochs):
        for _x, _y in loader:
            pass
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, 3 repeats")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    epochs, repeats = (2, 3) if args.quick else (args.epochs, args.repeats)
    torch.set_num_threads(1)
    print(machine.line(), flush=True)
    split = ds.data.load("mnist1d", val_fraction=0.1).train
    samples = len(split) * epochs
    print(f"torch {torch.__version__}, 1 thread, load average {os.getloadavg()[0]:.1f}; MNIST-1D train split "
          f"({len(split)} samples), {epochs} epochs, median of {repeats} alternating repeats")
    print(f"{'batch':>6}{'in-memory samples/s':>22}{'DataLoader samples/s':>22}{'ratio':>9}")
    rows = []
    for batch in (32, 128, 1024):
        ours, theirs = [], []
        for repeat in range(repeats):
            pair = [(ours, in_memory), (theirs, data_loader)]
            for times, fn in pair if repeat % 2 == 0 else pair[::-1]:
                times.append(fn(split, batch, epochs))
        a, b = samples / statistics.median(ours), samples / statistics.median(theirs)
        print(f"{batch:>6}{a:>22,.0f}{b:>22,.0f}{a / b:>8.1f}x", flush=True)
        rows.append({"batch": batch, "ratio": a / b})
    return rows


if __name__ == "__main__":
    main()
