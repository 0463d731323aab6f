"""The machine a benchmark ran on, in one line that every benchmark prints first.

    PYTHONPATH=src python -m benchmarks.machine

Figures taken on different machines can then be read side by side: the CPU model, the vector instructions torch
dispatches to (``torch.backends.cpu.get_cpu_capability()``: ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, …), whether
the CPU computes bf16 dot products natively (AVX512-BF16 or AMX, as oneDNN reports it; without them bf16 is
emulated and slow), torch's thread count, the CUDA GPU if there is one, the load average, and a float32 matrix
product's GFLOP/s measured in the same run (the best of a few timed products: a busy machine lowers it, so it is
the yardstick a run's other figures are read against).
"""

from __future__ import annotations

import os
import time

import torch

from descend.train import hardware


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """The best GFLOP/s of ``repeats`` timed ``size × size`` float32 products on the CPU (after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=g), torch.randn(size, size, generator=g)
    a @ b  # warm-up: oneDNN/MKL pick their kernels and allocate on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def gpu() -> str | None:
    """``"<name> (compute capability X.Y), CUDA V"`` of the current CUDA device, or None without one."""
    if not torch.cuda.is_available():
        return None
    m = hardware.machine("cuda")
    return f"{m.name} (compute capability {m.capability}), CUDA {torch.version.cuda}"


def describe(size: int = 1024) -> dict:
    """The machine's fields (the CPU as :func:`descend.train.hardware.machine` sees it, which is what the automatic
    speed settings decide from), the matmul GFLOP/s measured now included."""
    cpu = hardware.machine("cpu")
    return {
        "cpu": cpu.name,
        "capability": cpu.capability,
        "native_bf16": cpu.bf16,
        "threads": torch.get_num_threads(),
        "cores": cpu.cores,
        "gpu": gpu(),
        "torch": torch.__version__,
        "load": os.getloadavg()[0],
        "matmul_gflops": matmul_gflops(size),
        "matmul_size": size,
    }


def line(fields: dict | None = None) -> str:
    """One line of :func:`describe`'s fields (measured now unless given)."""
    m = fields if fields is not None else describe()
    return (
        f"machine: {m['cpu']}, capability {m['capability']}, native bf16 {'yes' if m['native_bf16'] else 'no'}, "
        f"{m['threads']} thread{'s' if m['threads'] != 1 else ''} of {m['cores']} cores, "
        f"GPU {m['gpu'] or 'none'}, torch {m['torch']}, "
        f"load average {m['load']:.1f}, float32 matmul {m['matmul_size']}²: {m['matmul_gflops']:.1f} GFLOP/s"
    )


if __name__ == "__main__":
    print(line())
