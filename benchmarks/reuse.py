"""Many fits in one process: the data loaded once and shared, against loading it for every fit.

    PYTHONPATH=src python -m benchmarks.reuse [--fits 20] [--recipe examples/quickstart.toml]

What a search, cross-validation or a comparison over seeds does: build and fit the same recipe many times (here one
epoch each). ``shared`` loads the data once with ``experiment.load_data`` and passes it to every
``experiment.build``; ``reloaded`` lets every build load it again (MNIST-1D comes from the on-disk cache after
the first generation). Nothing touches the disk in either (no ``out``).
"""

from __future__ import annotations

import argparse
import time

from descend import config
from descend.runs import experiment

from . import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=int, default=20)
    parser.add_argument("--recipe", default="examples/quickstart.toml")
    args = parser.parse_args()
    print(machine.line(), flush=True)
    recipe = config.load(args.recipe, ["train.epochs=1", "train.device='cpu'", "schedule.warmup_epochs=0.2"])
    experiment.build(recipe).fit()  # warm the dataset cache and torch's kernels, so both sides start alike

    started = time.perf_counter()
    data = experiment.load_data(recipe)
    load_seconds = time.perf_counter() - started
    shared = []
    for _ in range(args.fits):
        t = time.perf_counter()
        shared.append((experiment.build(recipe, data).fit(), time.perf_counter() - t))
    shared_total = load_seconds + sum(s for _, s in shared)

    started = time.perf_counter()
    for _ in range(args.fits):
        experiment.build(recipe).fit()
    reloaded_total = time.perf_counter() - started

    accuracy = shared[-1][0].final["val_accuracy"]
    print(f"{args.fits} one-epoch fits of {args.recipe} in one process (val accuracy of the last: {accuracy:.4f})")
    print(f"  data loaded once : {shared_total:7.2f} s  (load {load_seconds:.2f} s, "
          f"{shared_total / args.fits:.2f} s per fit)")
    print(f"  data per fit     : {reloaded_total:7.2f} s  ({reloaded_total / args.fits:.2f} s per fit)")
    print(f"  ratio            : {reloaded_total / shared_total:.2f}x")


if __name__ == "__main__":
    main()
