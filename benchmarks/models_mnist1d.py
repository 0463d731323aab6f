"""Find a cnn1d recipe for MNIST-1D: a plain PyTorch loop, 2 threads, test accuracy per seed.

    PYTHONPATH=src python -m benchmarks.models_mnist1d --threads 2 --seeds 0 1 2

The defaults are the recipe found for the quickstart: cnn1d([32] * 5, batch_norm=True), AdamW(lr=2e-2,
weight_decay=0.05), batch 128, 8 epochs, 20% linear warmup then cosine decay to 0, stepped per batch.

The data is generated offline by ``mnist1d`` (4000 train, 1000 test, length 40) and standardized with the
training set's mean and standard deviation. Timing counts training and the final test pass, not data
generation; the CPU time (both threads together) is less sensitive to other load on a shared machine.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from mnist1d.data import get_dataset_args, make_dataset

from descend.models import cnn1d, count_parameters

from . import machine


def load() -> tuple[torch.Tensor, ...]:
    d = make_dataset(get_dataset_args())
    x, x_test = (torch.tensor(d[k], dtype=torch.float32) for k in ("x", "x_test"))
    mean, std = x.mean(), x.std()
    y, y_test = (torch.tensor(d[k], dtype=torch.long) for k in ("y", "y_test"))
    return (x - mean) / std, y, (x_test - mean) / std, y_test


def run(args: argparse.Namespace, seed: int, data: tuple[torch.Tensor, ...]) -> tuple[float, ...]:
    x, y, x_test, y_test = data
    keep = round(len(x) * (1 - args.val_fraction))  # a validation split leaves less to train on
    x, y = x[:keep], y[:keep]
    torch.manual_seed(seed)
    model = cnn1d(args.channels, input_shape=(40,), num_outputs=10, kernel_size=args.kernel_size,
                  batch_norm=not args.no_bn, dropout=args.dropout, activation=args.activation,
                  pool=args.pool, head=args.head)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    steps_per_epoch = -(-len(x) // args.batch_size)
    total = args.epochs * steps_per_epoch
    sched = None
    if args.schedule == "onecycle":  # also cycles AdamW's beta1 between 0.85 and 0.95
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=total, pct_start=args.warmup)
    elif args.schedule.startswith("warmup_cosine"):  # linear warmup to lr, then cosine to 0
        per_epoch = args.schedule.endswith("epoch")  # the rate changes once per epoch instead of per step
        unit = steps_per_epoch if per_epoch else 1
        n, warm = total // unit, max(1, round(args.warmup * total / unit))

        def factor(t: int) -> float:
            t //= unit
            return (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / (n - warm)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), args.batch_size):
            idx = perm[i:i + args.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()
    with torch.inference_mode():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return acc, wall, cpu, count_parameters(model)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--channels", type=int, nargs="+", default=[32, 32, 32, 32, 32])
    p.add_argument("--kernel-size", type=int, default=5)
    p.add_argument("--no-bn", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--activation", default="relu")
    p.add_argument("--pool", default="none")
    p.add_argument("--head", default="flatten")
    p.add_argument("--lr", type=float, default=2e-2)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--schedule", default="warmup_cosine",
                   choices=["onecycle", "warmup_cosine", "warmup_cosine_epoch", "none"])
    p.add_argument("--warmup", type=float, default=0.2)
    p.add_argument("--smoothing", type=float, default=0.0)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(machine.line(), flush=True)
    data = load()
    print(vars(args))
    for seed in args.seeds:
        acc, wall, cpu, n = run(args, seed, data)
        print(f"seed {seed}: test acc {acc:.4f}  wall {wall:.1f}s  per epoch {wall / args.epochs:.2f}s  "
              f"cpu {cpu:.1f}s  params {n}", flush=True)


if __name__ == "__main__":
    main()
