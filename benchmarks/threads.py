"""Threads on a shared machine: ``descend run`` of a 60-epoch wine MLP, quiet and with one other busy process.

    PYTHONPATH=src python -m benchmarks.threads [--quick] [--repeats 3]

Each setting (``train.threads`` 1, 2 or auto; OMP_WAIT_POLICY left to the OpenMP runtime or PASSIVE) runs as its
own ``descend run`` process, once with the machine as it is and once while this benchmark keeps one extra process
spinning (started and stopped here, by its pid). Reported: median training seconds (the run's own figure), the
start-up seconds (process wall time less training), and busy / quiet ratios. Repeats alternate the settings.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import machine

WINE = """
name = "wine"
seed = 0
[data]
name = "wine"
val_fraction = 0.2
scale = "standardize"
[model]
name = "mlp"
hidden = [64, 64]
[train]
epochs = {epochs}
batch_size = 16
device = "cpu"
[optimizer]
name = "adam"
lr = 1e-3
"""
SETTINGS = [("1", None), ("2", None), ("2", "PASSIVE"), ("auto", None)]


def run_once(recipe: Path, out: Path, threads: str, policy: str | None) -> tuple[float, float]:
    """(training seconds, start-up and wrap-up seconds) of one ``descend run``."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "descend.cli", "run", str(recipe), "--quiet", "--out", str(out),
                           "--set", f"train.threads={threads}"], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    train = float(re.search(r"done in ([0-9.]+)s", done.stdout).group(1))
    return train, wall - train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    print(machine.line(), flush=True)
    repeats = 1 if args.quick else args.repeats
    times: dict[tuple, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "wine.toml"
        recipe.write_text(WINE.format(epochs=args.epochs))
        load = os.getloadavg()[0]
        for repeat in range(repeats):
            for busy in (False, True):
                spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    for threads, policy in SETTINGS:
                        out = Path(tmp) / f"run-{repeat}-{busy}-{threads}-{policy}"
                        times.setdefault((threads, policy, busy), []).append(run_once(recipe, out, threads, policy))
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the start; wine MLP 64-64, {args.epochs} epochs, "
          f"batch 16; median of {repeats}")
    print(f"{'threads':<10}{'wait policy':<13}{'quiet s':>9}{'busy s':>9}{'busy/quiet':>12}{'start-up s':>12}")
    for threads, policy in SETTINGS:
        quiet, busy = (statistics.median(t for t, _ in times[(threads, policy, b)]) for b in (False, True))
        startup = statistics.median(s for b in (False, True) for _, s in times[(threads, policy, b)])
        print(f"{threads:<10}{policy or 'default':<13}{quiet:>9.2f}{busy:>9.2f}{busy / quiet:>11.2f}x{startup:>12.2f}")


if __name__ == "__main__":
    main()
