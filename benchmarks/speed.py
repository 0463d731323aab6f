"""The speed options on a CNN: fp32 against channels-last, bf16 autocast, both, and torch.compile.

    PYTHONPATH=src python -m benchmarks.speed [--quick] [--images 8192] [--epochs 3] [--threads 2]

The Fashion-MNIST example's network (``examples/fashion_mnist.toml``'s ``[model]``) trains on the first
``--images`` training images (random images of the same shape where the data set is not installed) with AdamW.
Each option gets its own fresh model from the same initialisation; the table shows the first epoch (which pays for
compilation) and the median of the later epochs in images per second, as a ratio to fp32 measured in the same run,
and the final training loss (bf16 rounds the forward pass, so its loss differs in the third decimal).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import descend as ds
from descend import config

from . import machine

# every variant explicit: the automatic settings would otherwise pick bf16 and channels-last for "fp32" on some CPUs
_FP32 = {"precision": "fp32", "channels_last": False}
VARIANTS = {"fp32": _FP32, "channels_last": {**_FP32, "channels_last": True}, "bf16": {**_FP32, "precision": "bf16"},
            "channels_last + bf16": {"channels_last": True, "precision": "bf16"}, "compile": {**_FP32, "compile": True}}


def images(n: int) -> ds.data.Split:
    try:
        train = ds.data.load("fashion_mnist", val_fraction=0.0, scale="standardize").train
        return ds.data.Split(train.x[:n], train.y[:n], "classification", 10)
    except ds.errors.UserError:  # not installed: the same shapes, random values
        g = torch.Generator().manual_seed(0)
        return ds.data.Split(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g),
                             "classification", 10)


class _Clock(ds.callbacks.Callback):
    def __init__(self):
        self.marks = []

    def on_epoch_start(self, trainer):
        self.marks.append(time.perf_counter())

    def on_epoch_end(self, trainer, logs):
        self.marks[-1] = time.perf_counter() - self.marks[-1]


def measure(data: ds.data.Split, options: dict, epochs: int, batch: int, threads: int,
            recipe: str = "examples/fashion_mnist.toml") -> dict:
    """Images/s of the first epoch and the median of the later ones, and the final training loss, of ``recipe``'s
    ``[model]`` trained on ``data`` with AdamW and the speed ``options``."""
    spec = config.load(recipe).model
    clock = _Clock()
    trainer = ds.Trainer(ds.models.spec(spec.name, **spec.options), optimizer=ds.optim.create("adamw", lr=2e-3),
                         callbacks=[clock], seed=0, threads=threads, device="cpu", **options)
    history = trainer.fit(data, epochs=epochs, batch_size=batch, progress=False)
    return {"first": len(data) / clock.marks[0], "steady": len(data) / statistics.median(clock.marks[1:]),
            "loss": history[-1]["train_loss"]}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 images, 3 epochs, no compile")
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(machine.line(), flush=True)
    n = 2048 if args.quick else args.images
    data = images(n)
    variants = {k: v for k, v in VARIANTS.items() if not (args.quick and "compile" in v)}
    rows = [{"variant": name, **measure(data, options, max(args.epochs, 2), args.batch, args.threads)}
            for name, options in variants.items()]
    base = rows[0]["steady"]
    print(f"torch {torch.__version__}, {args.threads} threads, {n} images of 28×28, batch {args.batch}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'variant':<22} {'first epoch img/s':>18} {'later epochs img/s':>19} {'ratio':>6} {'final loss':>11}")
    for r in rows:
        r["ratio"] = r["steady"] / base
        print(f"{r['variant']:<22} {r['first']:>18.0f} {r['steady']:>19.0f} {r['ratio']:>5.2f}x {r['loss']:>11.4f}")
    return rows


if __name__ == "__main__":
    main()
