"""How many training epochs does each search strategy spend to find a good MLP for MNIST-1D?

    PYTHONPATH=src python -m benchmarks.search            # 3 seeds, a 4 × 3 × 2 × 3 grid, 8 epochs a trial
    PYTHONPATH=src python -m benchmarks.search --quick    # a 3 × 2 × 2 × 2 grid, 4 epochs a trial (a few minutes)

The space: AdamW's learning rate (log), weight decay (log), dropout and the width of a two-layer MLP. The full grid
is trained once; its best validation accuracy is the target. Then every strategy (grid in a seeded order, random,
quasi-random Halton, TPE, TPE with Hyperband pruning) runs one worker for as many trials as the grid has, and the
benchmark counts the epochs it trained (pruned trials count the epochs they ran) up to and including the first
trial within 1 point of the target. Trial order is execution order with one worker, so the count is what a study
stopped at that trial would have spent. The test split is never read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from descend import config as cfg
from descend.tune import search
from descend.tune import space as spaces

from . import machine

STRATEGIES = {"grid": ("grid", "none"), "random": ("random", "none"), "qmc": ("qmc", "none"),
              "tpe": ("tpe", "none"), "tpe + hyperband": ("tpe", "hyperband")}


def recipe(epochs: int) -> cfg.Config:
    return cfg.validate({"name": "mnist1d-mlp", "seed": 0, "data": {"name": "mnist1d", "val_fraction": 0.1},
                         "model": {"name": "mlp", "hidden": [64, 64]},
                         "train": {"epochs": epochs, "batch_size": 128},
                         "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0}})


def space(quick: bool) -> spaces.Space:
    widths = [[32, 32], [128, 128]] if quick else [[32, 32], [128, 128], [512, 512]]
    return spaces.parse({
        "optimizer": {"lr": {"float": [3e-4, 3e-2], "log": True, "grid": 3 if quick else 4},
                      "weight_decay": {"float": [1e-4, 1e-1], "log": True, "grid": 2 if quick else 3}},
        "model": {"dropout": {"float": [0.0, 0.4], "grid": 2}, "hidden": {"categorical": widths}},
    }, source="benchmark space")


def spent(trials: list[dict], target: float) -> tuple[int | None, int]:
    """Epochs up to and including the first trial at or above ``target`` (None if none reached it), and in all."""
    total = 0
    for t in sorted(trials, key=lambda t: t["number"]):
        total += t["epochs"] or 0
        if t["state"] == "complete" and t["value"] is not None and t["value"] >= target:
            return total, sum(x["epochs"] or 0 for x in trials)
    return None, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid and 4 epochs a trial")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="epochs a trial (default 8, or 4 with --quick)")
    args = parser.parse_args()
    print(machine.line(), flush=True)
    epochs = args.epochs or (4 if args.quick else 8)
    config, sp = recipe(epochs), space(args.quick)
    grid_size = len(sp.grid())
    root = Path(tempfile.mkdtemp(prefix="descend-bench-search-"))

    def run(sampler: str, pruner: str, seed: int, trials: int) -> list[dict]:
        out = root / f"{sampler}-{pruner}-{seed}"
        return search(config, sp, sampler=sampler, pruner=pruner, seed=seed, trials=trials, out=out,
                      keep_runs=False, echo=lambda text: None)["trials"]

    started = time.perf_counter()
    full = run("grid", "none", 0, grid_size)
    target = max(t["value"] for t in full if t["value"] is not None) - 0.01
    print(f"full grid: {grid_size} trials × {epochs} epochs, best val accuracy {target + 0.01:.4f} "
          f"({time.perf_counter() - started:.0f}s); target {target:.4f}\n")
    print(f"| strategy | mean epochs to within 1 point | per seed ({', '.join(map(str, args.seeds))}) | reached |")
    print("|---|---|---|---|", flush=True)
    for name, (sampler, pruner) in STRATEGIES.items():
        counts = []
        for seed in args.seeds:
            reached, _ = spent(run(sampler, pruner, seed, grid_size) if (sampler, seed) != ("grid", 0) else full,
                               target)
            counts.append(reached)
        found = [c for c in counts if c is not None]
        mean = f"{statistics.fmean(found):.0f}" if found else "-"
        per_seed = ", ".join("-" if c is None else str(c) for c in counts)
        print(f"| {name} | {mean} | {per_seed} | {len(found)}/{len(counts)} |", flush=True)
    print(f"\ngrid budget: {grid_size * epochs} epochs; {time.perf_counter() - started:.0f}s in all; grid axes:")
    for d in sp.dims:
        print(f"  {d.path}: {', '.join(f'{v:.3g}' if isinstance(v, float) else str(v) for v in d.grid_values())}")


if __name__ == "__main__":
    main()
