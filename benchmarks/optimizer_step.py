"""Time one optimizer step: descend's composed optimizer against torch's for-loop, foreach and fused kernels.

    PYTHONPATH=src python -m benchmarks.optimizer_step [--repeats 7] [--steps 20]

Two parameter sets: (a) the quickstart model's parameters, (b) 10 tensors of 1M elements (float32, CPU unless
--device says otherwise), with torch.set_num_threads(2). Each timing is the median over ``repeats`` blocks of
``steps`` steps (after a warm-up), so that a busy shared machine disturbs the medians little; ratios are
against torch's foreach kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import descend.optim as O
from descend import models

from . import machine


def quickstart_model() -> nn.Module:
    """The model of examples/quickstart.toml: cnn1d(channels=[64, 64, 64], batch_norm=True) on MNIST-1D."""
    return models.cnn1d([64, 64, 64], batch_norm=True, input_shape=(40,), num_outputs=10)


OPTIMIZERS = [  # (label, descend name, options, torch class, torch kwargs, torch has fused)
    ("Adam", "adam", {}, torch.optim.Adam, {}, True),
    ("AdamW", "adamw", {}, torch.optim.AdamW, {"weight_decay": 0.01}, True),
    ("SGD+momentum", "momentum", {}, torch.optim.SGD, {"momentum": 0.9}, True),
    ("RMSprop", "rmsprop", {}, torch.optim.RMSprop, {}, False),
    ("AdaGrad", "adagrad", {}, torch.optim.Adagrad, {}, True),
]


def time_block(opt: torch.optim.Optimizer, steps: int, sync) -> float:
    """Seconds per step over one block of ``steps`` steps (gradients fixed)."""
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    sync()
    return (time.perf_counter() - start) / steps


def fresh(shapes: list[torch.Size], device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g).to(device).requires_grad_(True)
        p.grad = torch.randn(s, generator=g).to(device) * 1e-2
        params.append(p)
    return params


def cell(t: dict[str, float], key: str, width: int = 16) -> str:
    """``µs (ratio to foreach)`` for one implementation, or a dash where torch has none."""
    if key not in t:
        return f"{'—':>{width}}"
    return f"{t[key] * 1e6:>9.0f} ({t[key] / t['foreach']:.2f}x)".rjust(width)


def measure(name: str, opts: dict, cls: type, kw: dict, has_fused: bool, shapes, device: str, repeats: int,
            steps: int) -> tuple[dict[str, float], str]:
    """Median seconds per step of each implementation. The implementations are timed in turn within every
    repeat (interleaved), so a burst of load from other users hits all of them alike."""
    impls = {"composed": lambda p: O.create(name, p, implementation="composed", exclude_from_decay=[],
                                            **opts)}
    for impl, flags in [("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                        ("fused", {"fused": True})]:
        if impl != "fused" or has_fused:
            impls[impl] = lambda p, flags=flags: cls(p, lr=1e-3, **kw, **flags)
    opts_built = {k: make(fresh(shapes, device)) for k, make in impls.items()}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for opt in opts_built.values():  # warm-up
        time_block(opt, 3, sync)
    blocks: dict[str, list[float]] = {k: [] for k in opts_built}
    for _ in range(repeats):
        for k, opt in opts_built.items():
            blocks[k].append(time_block(opt, steps, sync))
    t = {k: statistics.median(v) for k, v in blocks.items()}
    chosen = O.create(name, fresh(shapes, device), exclude_from_decay=[], **opts)
    if isinstance(chosen, O.ComposedOptimizer):
        kind = "composed"
    else:
        kind = "fused" if chosen.defaults.get("fused") else "foreach"
    return t, f"{type(chosen).__name__}/{kind}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20, help="steps per block (a quarter of it for 10x1M)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine.line(), flush=True)
    sets = {"quickstart": [p.shape for p in quickstart_model().parameters()],
            "10x1M": [torch.Size([1_000_000])] * 10}
    big_steps = max(2, args.steps // 4)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads; median of "
          f"{args.repeats} blocks x {args.steps} steps ({big_steps} for 10x1M) per cell, "
          "after 3 warm-up steps "
          "(the machine is shared: implementations interleaved, medians of the blocks, not means)")
    for set_name, shapes in sets.items():
        n = sum(s.numel() for s in shapes)
        steps = args.steps if set_name == "quickstart" else big_steps
        print(f"\n({set_name}: {len(shapes)} tensors, {n:,} parameters)  µs per step (ratio to foreach)")
        print(f"{'optimizer':<14}{'composed':>16}{'for-loop':>16}{'foreach':>10}{'fused':>16}"
              f"{'create() ->':>22}")
        for label, name, opts, cls, kw, has_fused in OPTIMIZERS:
            t, chosen = measure(name, opts, cls, kw, has_fused, shapes, args.device, args.repeats, steps)
            print(f"{label:<14}{cell(t, 'composed')}{cell(t, 'for-loop')}{t['foreach'] * 1e6:>10.0f}"
                  f"{cell(t, 'fused')}{chosen:>22}", flush=True)


if __name__ == "__main__":
    main()
