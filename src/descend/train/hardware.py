"""The automatic speed settings: precision, memory layout and CPU threads, decided from what the hardware computes
natively and from the model's size, with the reason for each choice.

:func:`decide` is the one place these choices are made; the trainer applies what it returns, the run directory
records it (``summary.json`` and every checkpoint), ``descend show`` prints it for a recipe and ``descend doctor``
reports explicit choices that are slow on this machine (:func:`slow_choices`).

- ``precision = "auto"``: bf16 autocast where the hardware multiplies bf16 natively (a CPU with AVX512-BF16 or AMX
  as oneDNN reports it, ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``; a CUDA GPU of compute capability 8.0 or
  more), fp16 autocast with gradient scaling (Micikevicius et al. 2018, "Mixed Precision Training";
  ``torch.amp.GradScaler``) on older CUDA GPUs, fp32 elsewhere; and fp32 for a step too small for the lower
  precision to pay (under :data:`LOW_PRECISION_FLOPS`: the casts autocast adds around each layer then cost more
  than the faster products save). An explicit ``"bf16"`` or ``"fp16"`` that the hardware only emulates trains,
  after one warning.
- ``channels_last = "auto"``: NHWC memory for models with 2-D convolutions on image batches (N, C, H, W) on a CPU
  or CUDA device, where oneDNN's and cuDNN's convolution kernels are fastest in it (the README's "automatic speed
  settings" gives the measured gains); off for everything else.
- ``threads = "auto"``: with ``deterministic = true``, from the model's size and the core count only (one thread
  for a step under :data:`~descend.train.threads.SMALL_STEP_FLOPS`, else torch's own count, by default one per
  core), so a result never depends on the machine's load; without it, from the load as well, at each fit
  (:mod:`descend.train.threads`), which protects a busy machine's speed but lets the float32 sums, and so the
  result, vary between runs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UserError
from . import threads as thread_policy

# forward + backward of one batch; below this, fp32 stays: autocast's casts around each layer cost more than the
# faster bf16 products save. The bound sits between the step sizes measured slower and faster in bf16 (the
# README's "automatic speed settings" lists them), with room on both sides.
LOW_PRECISION_FLOPS = 1e8
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ASKED = "asked for"  # the reason of an explicit setting


@dataclass(frozen=True)
class Machine:
    """What a device computes natively: ``kind`` ("cpu", "cuda", "mps"), its ``name`` (CPU model or GPU name),
    ``capability`` (torch's CPU vector instruction set, e.g. "AVX512" or "AVX2", or a GPU's compute capability,
    e.g. "8.0"), whether it multiplies ``bf16`` and ``fp16`` natively, and the ``cores`` this process may use."""

    kind: str
    name: str
    capability: str
    bf16: bool
    fp16: bool
    cores: int

    def describe(self) -> str:
        native = [p for p, yes in (("bf16", self.bf16), ("fp16", self.fp16)) if yes]
        what = "compute capability " if self.kind == "cuda" else ""
        return (
            f"{self.kind} {self.name} ({what}{self.capability}; native {', '.join(native) or 'fp32 only'}; "
            f"{self.cores} cores)"
        )


@dataclass(frozen=True)
class Settings:
    """The speed settings a fit runs with, each with the reason it was chosen (:func:`decide`)."""

    precision: str
    channels_last: bool
    threads: int
    machine: Machine
    reasons: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One line for the start of a run: each choice and why, then the machine."""
        return (
            f"speed: {self.threads} thread{'s' * (self.threads != 1)} ({self.reasons['threads']}), "
            f"{self.precision} ({self.reasons['precision']}), channels-last {'on' if self.channels_last else 'off'}"
            f" ({self.reasons['channels_last']}); on {self.machine.describe()}"
        )

    def record(self) -> dict:
        """The settings as JSON values (``summary.json``'s ``speed``, and each checkpoint's)."""
        m = self.machine
        return {
            "device": m.kind,
            "machine": m.name,
            "capability": m.capability,
            "native_bf16": m.bf16,
            "threads": self.threads,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "reasons": dict(self.reasons),
        }


def machine(device: torch.device | str = "cpu") -> Machine:
    """What ``device`` computes natively, as torch reports it."""
    device = torch.device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return Machine(
            "cuda",
            torch.cuda.get_device_name(device),
            f"{major}.{minor}",
            bf16=major >= 8,
            fp16=major >= 7,
            cores=cores,
        )  # tensor cores: fp16 from Volta (7.0), bf16 from Ampere (8.0)
    if device.type == "cpu":
        # fp16 autocast is for CUDA: most CPU kernels have no fp16 path, and descend does not use it there
        return Machine(
            "cpu", cpu_name(), torch.backends.cpu.get_cpu_capability(), bf16=_onednn_bf16(), fp16=False, cores=cores
        )
    return Machine(device.type, device.type, "unknown", bf16=False, fp16=False, cores=cores)


@functools.cache
def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for row in f:
                if row.startswith("model name"):
                    return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _onednn_bf16() -> bool:
    """Whether oneDNN runs bf16 matrix products natively on this CPU (AVX512-BF16 or AMX); False where this torch
    cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def decide(
    device: torch.device | str = "cpu",
    *,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    threads: int | str = "auto",
    deterministic: bool = False,
    model: nn.Module | None = None,
    sample: torch.Tensor | None = None,
    hardware: Machine | None = None,
) -> Settings:
    """The speed settings for training ``model`` on batches like ``sample`` on ``device``, with their reasons.

    Explicit settings are kept (an emulated precision is warned about once, :func:`slow_choices`); ``"auto"`` ones
    are decided as the module docstring says. ``threads = "auto"`` without ``deterministic`` is decided from the
    machine's load here (:func:`descend.train.threads.choose`), so call this at the start of each fit.
    ``hardware`` replaces the detected :func:`machine` (tests, and ``descend show`` for another device).
    """
    hw = hardware or machine(device)
    flops = thread_policy.step_flops(model, sample) if model is not None and sample is not None else None
    reasons = {}
    chosen_precision, reasons["precision"] = _precision(precision, hw, flops)
    layout, reasons["channels_last"] = layout_choice(channels_last, hw.kind, model, sample)
    count, reasons["threads"] = _threads(threads, hw, deterministic, model, sample, flops)
    for message in slow_choices(hw, precision=precision, channels_last=channels_last, threads=threads).values():
        warnings.warn(message, UserWarning, stacklevel=4)  # the line that called Trainer.fit
    return Settings(chosen_precision, layout, count, hw, reasons)


def _precision(setting: str, hw: Machine, flops: float | None) -> tuple[str, str]:
    if setting != "auto":
        return setting, ASKED
    if hw.kind not in ("cpu", "cuda") or not (hw.bf16 or (hw.kind == "cuda" and hw.fp16)):
        return "fp32", "no native bf16 or fp16 on this device"
    if flops is not None and flops < LOW_PRECISION_FLOPS:
        return "fp32", f"a step of {flops:.1e} FLOPs is too small for lower precision to pay"
    if hw.bf16:
        return "bf16", "native bf16"
    return "fp16", "native fp16 without bf16: fp16 autocast with gradient scaling"


def layout_choice(
    setting: bool | str, kind: str, model: nn.Module | None, sample: torch.Tensor | None
) -> tuple[bool, str]:
    """Whether a fit of ``model`` on inputs like ``sample`` on a device of ``kind`` stores them channels-last, and
    why (an explicit setting is kept: :func:`descend.train.speed.channels_last` refuses it where it cannot apply)."""
    if setting != "auto":
        return bool(setting), ASKED
    images = sample is not None and sample.dim() == 4
    convs = model is not None and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if not (images and convs):
        return False, "not a 2-D convolutional model on image batches"
    if kind not in ("cpu", "cuda"):
        return False, f"not known to pay on {kind}"
    return True, "2-D convolutions run fastest in NHWC"


def _threads(setting, hw: Machine, deterministic: bool, model, sample, flops) -> tuple[int, str]:
    if setting != "auto":
        return thread_policy.choose(setting, model, sample), ASKED
    current = torch.get_num_threads()
    if hw.kind != "cpu" or sample is None or current == 1:
        return current, "torch's setting" if hw.kind == "cpu" else f"the model runs on {hw.kind}"
    if not deterministic:
        count = thread_policy.choose("auto", model, sample, flops)
        return count, "from the step's size and the machine's load at the fit's start, so it may vary between runs"
    if flops < thread_policy.SMALL_STEP_FLOPS:
        return 1, "a step too small to split; deterministic, so the load is not consulted"
    return current, "torch's count for this machine's cores; deterministic, so the load is not consulted"


def slow_choices(
    hw: Machine, *, precision: str = "auto", channels_last: bool | str = "auto", threads: int | str = "auto"
) -> dict[str, str]:
    """Explicit speed settings that are slow on this hardware (a precision it only emulates, more threads than
    cores): ``{setting: message}``, each message saying what to use instead."""
    found = {}
    if hw.kind == "cpu" and isinstance(threads, int) and not isinstance(threads, bool) and threads > hw.cores:
        found["threads"] = (
            f"threads = {threads} on a CPU with {hw.cores} cores: the extra threads wait for a core at every "
            'operation; use threads = "auto"'
        )
    if precision == "bf16" and not hw.bf16:
        found["precision"] = (
            f'precision = "bf16" on {hw.describe()}: this {hw.kind} has no native bf16 and emulates '
            'it, many times slower than fp32; use precision = "auto" (or "fp32")'
        )
    if precision == "fp16" and not hw.fp16:
        where = "a CPU" if hw.kind == "cpu" else hw.describe()
        found["precision"] = (
            f'precision = "fp16" on {where}: fp16 is computed natively on CUDA GPUs with tensor cores '
            'only, emulated here; use precision = "auto" (or "fp32")'
        )
    if channels_last is True and hw.kind not in ("cpu", "cuda"):
        found["channels_last"] = (
            f'channels_last = true on {hw.kind}: not known to pay there; use channels_last = "auto"'
        )
    return found


def resumed(now: Settings, recorded: dict, *, deterministic: bool) -> Settings:
    """The settings a resumed fit runs with: the precision its checkpoint recorded (a lower precision computes
    other numbers) and, for a deterministic run, the recorded thread count (float32 sums split over another number
    of threads add up in another order); the rest as decided now. The layout follows from the model, the data and
    the kind of device, as before the stop."""
    reasons = dict(now.reasons)
    precision, count = now.precision, now.threads
    if not isinstance(recorded, dict):  # read before the checkpoint's full check: a damaged record is ignored here
        return now
    if now.reasons["precision"] != ASKED and recorded.get("precision") in PRECISIONS[1:]:
        precision, reasons["precision"] = recorded["precision"], "recorded by the run being resumed"
        slow = slow_choices(now.machine, precision=precision).get("precision")
        if slow is not None:  # the run moved to a machine that emulates the precision it started in
            warnings.warn(f"resuming in the precision the run recorded: {slow}", UserWarning, stacklevel=4)
    saved_count = recorded.get("threads")
    if deterministic and now.reasons["threads"] != ASKED and type(saved_count) is int and saved_count >= 1:
        count, reasons["threads"] = saved_count, "recorded by the run being resumed (deterministic)"
    return Settings(precision, now.channels_last, count, now.machine, reasons)


# ---------------------------------------------------------------------------------------------- applying them
def autocast(device: torch.device, precision: str):
    """bf16 or fp16 autocast, or a no-op context for fp32 (entering a disabled torch.autocast still costs time)."""
    if precision not in ("bf16", "fp16"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def gradient_scaler(precision: str, kept, optimizer, device: torch.device):
    """fp16's ``torch.amp.GradScaler`` (``kept``, from an earlier fit, when there is one); None otherwise."""
    if precision == "fp16" and getattr(optimizer, "needs_closure", False):
        raise UserError("precision 'fp16' scales gradients, which an optimizer that needs a closure cannot "
                        "take; use precision = \"bf16\" or \"fp32\"")
    if precision != "fp16":
        return None
    return kept if kept is not None else torch.amp.GradScaler(device.type)


@contextlib.contextmanager
def deterministic_kernels(wanted: bool):
    """torch's deterministic algorithms while the block runs when ``wanted`` (a global setting made before stays)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(wanted or before)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
