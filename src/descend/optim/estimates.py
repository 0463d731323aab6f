"""Running estimates kept on the device: what lets a learning-rate-free optimizer (Prodigy, D-Adaptation) step
without reading a number back from the device.

Prodigy and D-Adaptation estimate their step size from sums over all parameters (⟨g, w₀ − w⟩, ‖s‖). Their
authors' code reads each sum back as a Python number (``.item()``); on a GPU each read waits for the device to
finish its queued work (a host-device synchronisation). :class:`EstimatingOptimizer` keeps the estimates instead
as 0-dim tensors on the parameters' device, in every parameter group under the authors' names (``d``, ``k``, …),
so a step only queues work: comparisons become ``torch.where``, step sizes multiply as 0-dim tensors.

- The estimates are float64 (float32 on Apple's MPS, which has no float64), as the authors' Python floats are.
- ``state_dict()`` holds them as numbers (``k`` as an int), as the authors' optimizers do: a checkpoint keeps its
  JSON form, and float64 round-trips exactly, so a resumed run continues bit for bit. A loaded or new optimizer
  makes them tensors again at its first step (with ``torch.full``, which copies nothing from the host).
- :meth:`EstimatingOptimizer.number` reads one back, for logging: one read when the trainer logs, none per step.
- On the CPU a read costs nothing to wait for, while each small kernel on a 0-dim tensor costs a call into torch:
  there the step keeps the estimates as Python numbers and reads its sums as the authors' code does, operation for
  operation (:meth:`EstimatingOptimizer.on_device` decides; ``resident = True`` or ``False`` on the class or an
  instance forces one way, as the tests do to check both against the authors' code).

The helpers run the sums and updates as torch's foreach kernels (:func:`by_kind`: one list per device and dtype,
:func:`coefficient`: a 0-dim estimate as a kernel's scalar, :func:`total`: per-tensor results summed on the
device) and reuse one scratch tensor per parameter through a step (:func:`into`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from descend.errors import UserError


class EstimatingOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose parameter groups carry the estimates named in :attr:`estimates`, the same
    values in every group (see the module docstring); :attr:`counts` are step counts (ints in ``state_dict()``)."""

    estimates: tuple[str, ...] = ()
    counts: tuple[str, ...] = ("k",)
    resident: bool | None = None  # keep the estimates on the device; None: unless the parameters are on the CPU

    def begin_step(self, closure: Callable[[], Any] | None, name: str) -> tuple[Any, float]:
        """The closure's loss (evaluated with gradients on, if given) and the groups' common learning rate; groups
        may differ only by having lr = 0 (both methods estimate one step size for all of them)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr = max(g["lr"] for g in self.param_groups)
        if any(g["lr"] not in (lr, 0.0) for g in self.param_groups):
            raise UserError(f"{name}: parameter groups may differ in lr only by having lr = 0")
        return loss, lr

    def on_device(self) -> bool:
        """Whether this step keeps the estimates on the device (see the module docstring)."""
        if self.resident is not None:
            return self.resident
        grads = (p for group in self.param_groups for p in group["params"] if p.grad is not None)
        return next((p.device.type != "cpu" for p in grads), False)

    def as_numbers(self) -> dict[str, Any]:
        """The first group's estimates as Python numbers, stored so in every group (one read if they are tensors):
        the form the step on the host works with."""
        first = self.param_groups[0]
        values = {key: first[key] for key in self.estimates}
        tensors = [key for key, v in values.items() if isinstance(v, torch.Tensor)]
        if tensors:
            read = torch.stack([values[key].detach().to("cpu", torch.float64) for key in tensors]).tolist()
            values.update({key: int(n) if key in self.counts else n for key, n in zip(tensors, read, strict=True)})
            self.publish(values)
        return values

    def estimates_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The estimates as 0-dim tensors on ``device``, read from the first group (made tensors if numbers)."""
        first = self.param_groups[0]
        values = {key: first[key] for key in self.estimates}
        if all(isinstance(v, torch.Tensor) and v.device == device for v in values.values()):
            return values
        dtype = torch.float32 if device.type == "mps" else torch.float64
        values = {
            key: v.to(device=device, dtype=dtype)
            if isinstance(v, torch.Tensor)
            else torch.full((), v, dtype=dtype, device=device)
            for key, v in values.items()
        }
        self.publish(values)
        return values

    def publish(self, values: dict[str, torch.Tensor]) -> None:
        """Store new estimates in every group. New tensors, never written in place: a copy of a group (the
        checkpoint check steps a stand-in optimizer built from the groups) does not change this one's."""
        for group in self.param_groups:
            group.update(values)

    def number(self, key: str) -> float:
        """The first group's estimate ``key`` as a Python number (reads the device once if it is a tensor)."""
        value = self.param_groups[0][key]
        return float(value) if isinstance(value, torch.Tensor) else value

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with the estimates as numbers (one read from the device per group)."""
        state = super().state_dict()
        for group in state["param_groups"]:
            keys = [key for key in self.estimates if isinstance(group.get(key), torch.Tensor)]
            if keys:
                numbers = torch.stack([group[key] for key in keys]).tolist()
                group.update({key: int(n) if key in self.counts else n for key, n in zip(keys, numbers, strict=True)})
        return state


def by_kind(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The parameters that have a gradient, in lists of one device and dtype each (what torch's foreach kernels
    take in one launch)."""
    kinds: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            kinds.setdefault((p.device, p.dtype), []).append(p)
    return list(kinds.values())


def coefficient(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a 0-dim estimate) as the scalar of a foreach kernel on tensors like ``like``: on their device, in
    their dtype (torch's fused GPU path takes a scalar of the list's dtype), float32 for half precision (so a
    coefficient keeps the precision a Python number has in torch's kernels)."""
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    return value.to(device=like.device, dtype=dtype)


def into(buf: list[torch.Tensor] | None, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` copied into ``buf`` (a step's scratch tensors of the same shapes), or cloned if there is none.
    On the CPU a new tensor costs more than a pass over an existing one (no caching allocator, as on a GPU)."""
    if buf is None:
        return torch._foreach_mul(tensors, 1)  # a copy in one foreach kernel
    torch._foreach_copy_(buf, tensors)
    return buf


def total(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The sum of per-tensor 0-dim results (dot products, norms), in ``like``'s dtype and device (an estimate's)."""
    return torch.stack(parts).to(device=like.device, dtype=like.dtype).sum()
