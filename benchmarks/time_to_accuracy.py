"""Time to accuracy: a recipe trained on several seeds, mean ± std of its test accuracy and training seconds.

    PYTHONPATH=src python -m benchmarks.time_to_accuracy examples/fashion_mnist.toml --seeds 3
    PYTHONPATH=src python -m benchmarks.time_to_accuracy examples/mnist1d_fast.toml --seeds 3 --set train.epochs=10

Each seed is one ``descend run`` of the recipe with ``seed`` replaced (seeds ``--first-seed`` … on), trained in this
process without writing a run directory; its training seconds are what ``summary.json``'s ``train_seconds`` holds
(the fit, validation passes included, data loading excluded), with this process's CPU seconds over the same span
beside them (all threads together: where other processes keep the machine busy, CPU time stretches less than wall
time; on one thread it is close to what a quiet machine takes). Its test accuracy is the trained model's (the
recipe's averaged weights where it evaluates with them) on the test split. The machine line comes first
(:mod:`benchmarks.machine`), so figures from different machines can be read side by side; the seeds run one after
another, and a busy machine stretches their seconds (the matmul GFLOP/s of the same run tells by how much).
"""

from __future__ import annotations

import argparse
import statistics
import time

from descend import config as cfg
from descend.errors import UserError
from descend.runs import experiment

from . import machine
from .averaging_ensembles import mean_std


def run_seed(recipe: str, seed: int, overrides: list[str]) -> dict:
    """One training run of ``recipe`` with ``seed``: test accuracy, training seconds, epochs run."""
    exp = experiment.build(cfg.load(recipe, [*overrides, f"seed={seed}"]))
    cpu = time.process_time()
    result = exp.fit()
    cpu = time.process_time() - cpu
    metrics = exp.evaluate("test")
    return {
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "seconds": result.seconds,
        "cpu_seconds": cpu,
        "speed": exp.trainer.speed.line(),  # what the automatic settings chose, and why
        "epochs": len(result.history),
        "status": result.status,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="a recipe file, e.g. examples/mnist1d_fast.toml")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe field, as descend run --set (repeatable)",
    )
    args = parser.parse_args(argv)
    print(machine.line(), flush=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        try:
            row = run_seed(args.recipe, seed, args.overrides)
        except UserError as e:  # a recipe or --set mistake: one message, as descend run gives it
            parser.exit(2, f"descend: error: {e}\n")
        if not rows:
            print(row["speed"], flush=True)
        rows.append(row)
        print(
            f"seed {seed}: test accuracy {row['test_accuracy']:.2%}, {row['seconds']:.1f} s of training "
            f"({row['cpu_seconds']:.1f} s of CPU), {row['epochs']} epochs ({row['status']})",
            flush=True,
        )
    extra = f" with {' '.join(args.overrides)}" if args.overrides else ""
    print(
        f"{args.recipe}{extra}, {len(rows)} seeds: test accuracy {mean_std(rows, 'test_accuracy', scale=100)}%, "
        f"training {mean_std(rows, 'seconds', digits=1)} s ({mean_std(rows, 'cpu_seconds', digits=1)} s of CPU)"
    )
    accuracies, seconds = [r["test_accuracy"] for r in rows], [r["seconds"] for r in rows]
    spread = statistics.stdev if len(rows) > 1 else lambda _: 0.0
    return {
        "recipe": args.recipe,
        "rows": rows,
        "accuracy": statistics.fmean(accuracies),
        "accuracy_std": spread(accuracies),
        "seconds": statistics.fmean(seconds),
        "seconds_std": spread(seconds),
    }


if __name__ == "__main__":
    main()
