"""The doctor's speed check: explicit speed settings that are slow on the machine the recipe is examined on.

A recipe tuned on one machine can be many times slower on another: ``precision = "bf16"`` is fast on a CPU with
AVX512-BF16 or AMX and emulated in software (far slower than fp32) on one with AVX2 only. The settings
are judged by :func:`descend.train.hardware.slow_choices`, the rule training itself warns by; the fix is the
automatic setting, which decides from the hardware.
"""

from __future__ import annotations

from ..errors import UserError
from ..train import hardware
from ..train.checks import resolve_device
from .findings import Finding, Fix


def slow_settings(raw: dict | None) -> list[Finding]:
    """One warning per explicit ``[train]`` speed setting of the recipe ``raw`` that this machine only emulates or
    oversubscribes (none for a model examined without a recipe)."""
    train = (raw or {}).get("train", {})
    try:
        device = resolve_device(train.get("device", "auto"))
    except UserError:  # a device this machine lacks: training itself says so
        return []
    machine = hardware.machine(device)
    asked = {key: train.get(key, "auto") for key in ("precision", "channels_last", "threads")}
    slow = hardware.slow_choices(machine, **asked)
    return [
        Finding(
            "slow_speed_settings",
            "warning",
            message,
            {"setting": f"train.{key}", "value": asked[key], "machine": machine.describe()},
            Fix(f'set train.{key} = "auto": descend then decides from the hardware', {f"train.{key}": "auto"}),
        )
        for key, message in slow.items()
    ]
