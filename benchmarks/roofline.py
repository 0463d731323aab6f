"""Roofline: the GFLOP/s descend's Trainer reaches on a wide MLP against the machine's measured matmul peak.

    PYTHONPATH=src python -m benchmarks.roofline [--quick] [--threads 2]

The peak is the best of several timed float32 matrix products (2048 × 2048, :func:`benchmarks.machine.
matmul_gflops`); the training figure counts the multiply-adds of the linear layers (forward, and twice that for the
backward pass: :func:`descend.train.threads.step_flops`) over the steps of a fit, divided by its wall time. Both are
measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

import descend as ds
from descend.train.threads import step_flops

from . import machine


def training_rate(width: int, batch: int, steps: int, threads: int) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    x, y = torch.randn(batch * steps, width), torch.randint(0, 10, (batch * steps,))
    trainer = ds.Trainer(model, optimizer=torch.optim.AdamW(model.parameters(), fused=True), device="cpu",
                         precision="fp32", threads=threads)  # float32, as the matmul peak it is compared with
    trainer.fit((x[:batch], y[:batch]), epochs=1, batch_size=batch)  # warm-up
    started = time.perf_counter()
    trainer.fit((x, y), epochs=1, batch_size=batch)
    seconds = time.perf_counter() - started
    return step_flops(model, x[:batch]) * steps / seconds / 1e9


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=512)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 10 if args.quick else 40
    print(machine.line(), flush=True)
    peak = machine.matmul_gflops(2048)
    rate = training_rate(args.width, args.batch, steps, args.threads)
    peak_after = machine.matmul_gflops(2048)
    top = max(peak, peak_after)
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"matmul peak (float32, 2048²): {top:.1f} GFLOP/s; training MLP {args.width}-{args.width}-{args.width}-10, "
          f"batch {args.batch}: {rate:.1f} GFLOP/s = {rate / top:.0%} of peak")
    return {"peak": top, "training": rate, "fraction": rate / top}


if __name__ == "__main__":
    main()
