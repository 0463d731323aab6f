"""How many CPU threads a fit uses: ``threads = "auto"`` (the default) or a number.

torch runs each CPU kernel on a team of OpenMP threads (by default one per core) that meet at a barrier after every
op. A small model's step is hundreds of tiny ops, so when another process holds a core, every barrier waits for a
descheduled thread, and a small model's fit runs several times slower on two threads than on one
(``benchmarks.threads`` measures it). ``"auto"`` therefore uses one thread when a step is too small to split (under
:data:`SMALL_STEP_FLOPS`, counted once on one batch) or when the machine has no idle core (:func:`idle_cores`:
load average and run queue), and leaves torch's own setting (``OMP_NUM_THREADS``, ``torch.set_num_threads``)
otherwise. A number asks for exactly that many. The setting is restored when the fit ends.

Looking at the load makes the count, and so the result, depend on what else the machine runs: float32 sums split
over two threads add up in another order than on one, and training amplifies the difference. With
``deterministic = true`` the trainer therefore asks :mod:`descend.train.hardware`, which decides from the step's
size and the core count only and keeps a resumed run's recorded count.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch
from torch import nn

from ..errors import UserError

LOOKS = 3  # looks at the run queue, 1 ms apart, when a step is large enough for the machine's load to matter
SMALL_STEP_FLOPS = 5e7  # forward + backward of one batch; below this, one thread is as fast as two on a quiet machine


def step_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one training step on batch ``x``: the multiply-adds of the linear and convolution layers in one
    forward pass (found with forward hooks), times 2 per multiply-add, times 3 for forward plus backward. They grow
    with the batch in proportion, so the model runs on one sample of ``x`` and the count is scaled by its length (a
    forward pass of the whole batch at every fit cost 3-5% of a short fit at batch 1024).

    (torch's FlopCounterMode would count every op, but importing it loads torch._dynamo: seconds of start-up.)
    """
    macs = []

    def count(module, inputs, output):
        # each output value of a linear/conv layer is a dot product with one output unit's weights (weight[0])
        macs.append(output.numel() * module.weight[0].numel())

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    hooks = [m.register_forward_hook(count) for m in layers]
    was_training = model.training
    model.eval()  # batch norm keeps its running statistics: counting is not training
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return 3.0 * 2.0 * sum(macs) * len(x)


def idle_cores() -> float:
    """Cores this process may use that other processes leave free: the cores less the other processes' demand.

    The demand is the smaller of the one-minute load average (less this process's own thread, the caller) and the
    other processes' threads runnable right now: the average alone lags a minute behind, so a fit started just
    after another one ended would see the finished run as load and give up its second thread; the instantaneous
    count alone misses a busy process that happens to wait at the moment of the look. A process spinning on a
    core is in both.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not hasattr(os, "getloadavg"):
        return float(cores)
    others = max(0.0, os.getloadavg()[0] - 1.0)
    if others == 0:  # the looks could only lower the demand further
        return float(cores)
    looks = []
    for _ in range(LOOKS):
        looks.append(_others_runnable_now())
        time.sleep(0.001)
    if None not in looks:  # the fewest over a few milliseconds: a system task's blip is not a busy process
        others = min(others, min(looks))
    return max(0.0, cores - others)


def _others_runnable_now() -> int | None:
    """Threads of other processes runnable at this instant: the machine's (4th field of /proc/loadavg,
    running/total) less this process's own (its OpenMP workers spin, runnable, for a while after each parallel
    op), or None where the system does not say."""
    try:
        with open("/proc/loadavg") as f:
            total = int(f.read().split()[3].split("/")[0])
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as f:
                own += f.read().rpartition(")")[2].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, total - own)


def choose(setting: int | str, model: nn.Module, x: torch.Tensor | None, flops: float | None = None) -> int:
    """The number of threads for training ``model`` on batches like ``x`` (see the module's docstring; ``x`` is
    needed for ``"auto"`` only, and None means the training does not run on the CPU; ``flops``: the step's
    :func:`step_flops`, when the caller has counted them already)."""
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise UserError(f"threads must be a positive integer or 'auto', got {setting!r}")
        return setting
    current = torch.get_num_threads()
    if current == 1 or x is None or x.device.type != "cpu":
        return current
    if (flops if flops is not None else step_flops(model, x)) < SMALL_STEP_FLOPS or idle_cores() < current:
        return 1
    return current


@contextlib.contextmanager
def fixed(count: int):
    """Run the block on ``count`` intra-op threads, then restore torch's setting."""
    before = torch.get_num_threads()
    if count == before:  # nothing to set or restore (torch.set_num_threads reconfigures OpenMP and MKL each call)
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
