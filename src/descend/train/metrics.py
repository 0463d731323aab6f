"""Losses and metrics, accumulated on the device.

Losses (lecture 02): ``cross_entropy`` −Σ y log softmax(z), ``binary_cross_entropy`` on logits (one output unit,
targets 0/1), ``mse`` mean (ŷ − y)², ``mae`` mean |ŷ − y|. Metrics: accuracy for classification; mse, mae and
R² = 1 − Σ(ŷ − y)² / Σ(y − ȳ)² for regression.

Sums are kept as device tensors and read once per epoch (:meth:`MetricSums.compute`), so the training loop never
waits for the host.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError


def _bce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out.reshape(-1), y.to(out.dtype).reshape(-1))


def _regression(fn):
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return fn(out, y.reshape(out.shape).to(out.dtype))

    return loss


LOSSES = {
    "cross_entropy": F.cross_entropy,
    "binary_cross_entropy": _bce,
    "mse": _regression(F.mse_loss),
    "mae": _regression(F.l1_loss),
}
CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")


def resolve_loss(loss: str | None, task: str) -> str:
    """The loss name for ``task``: the given one after checking it fits, or cross_entropy / mse by default."""
    if loss is None:
        return "cross_entropy" if task == "classification" else "mse"
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if (loss in CLASSIFICATION_LOSSES) != (task == "classification"):
        kind = "classification" if loss in CLASSIFICATION_LOSSES else "regression"
        raise UserError(f"loss {loss!r} is for {kind}, but the data is a {task} task; "
                        f"use {'cross_entropy' if task == 'classification' else 'mse or mae'}")
    return loss


def num_outputs(loss: str, task: str, num_classes: int | None, y: torch.Tensor) -> int:
    """How many output units the model needs for this loss and data."""
    if loss == "binary_cross_entropy":
        return 1
    if task == "classification":
        return int(num_classes)
    return 1 if y.dim() == 1 else int(y.shape[1])


class MetricSums:
    """Running sums for one pass over a split; an update launches no kernel at all.

    :meth:`update` only keeps references to the step's (detached) outputs, targets and loss; they are reduced in
    one batch of vectorised device ops when :meth:`compute` or :meth:`state_dict` needs the sums, or when the held
    outputs pass ``budget`` elements. On a small model a step is a few hundred microseconds, and the dozen tiny
    kernels a per-step update would launch (argmax, compare, sum, casts, stack, add) cost a tenth of it.
    """

    def __init__(self, loss: str, device: torch.device, budget: int = 1 << 22, reduce=None):
        self.loss, self.reduce = loss, reduce  # reduce: sums -> sums over all processes (data parallelism)
        self.classification = loss in CLASSIFICATION_LOSSES
        self.budget = budget
        # samples, Σ batch-loss·batch-size, correct | Σ(ŷ−y)², Σ|ŷ−y|, Σy, Σy², target values
        self._sums = torch.zeros(7, dtype=torch.float64, device=device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._held = 0

    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Remember one batch (no device work); its values join the sums at the next reduction."""
        self._pending.append((out.detach(), y, loss.detach()))
        self._held += out.numel()
        if self._held > self.budget:
            self._reduce()

    @torch.no_grad()
    def _reduce(self) -> None:
        """Add the held batches to the sums: one pass of vectorised device ops, no host sync."""
        if not self._pending:
            return
        outs, ys, losses = zip(*self._pending)
        self._pending, self._held = [], 0
        counts = torch.tensor([y.shape[0] for y in ys], dtype=torch.float64, device=self._sums.device)
        out, y = torch.cat([o.float() for o in outs]), torch.cat(ys)
        zero = torch.zeros((), dtype=torch.float64, device=out.device)
        if self.classification:
            pred = (out.reshape(-1) > 0).long() if self.loss == "binary_cross_entropy" else out.argmax(dim=1)
            a, b, sy, syy = (pred == y).sum().double(), zero, zero, zero
        else:
            y = y.reshape(out.shape).double()
            err = out.double() - y
            a, b, sy, syy = err.square().sum(), err.abs().sum(), y.sum(), y.square().sum()
        loss_sum = (torch.stack(losses).double() * counts).sum()
        self._sums += torch.stack([counts.sum(), loss_sum, a, b, sy, syy, zero + y.numel()])

    @staticmethod
    def names(loss: str) -> list[str]:
        """The metric names :meth:`compute` gives for ``loss`` (without prefix)."""
        return ["loss", "accuracy"] if loss in CLASSIFICATION_LOSSES else ["loss", "mse", "mae", "r2"]

    def state_dict(self) -> dict:
        self._reduce()
        return {"sums": self._sums}

    def load_state_dict(self, state: dict) -> None:
        self._pending, self._held = [], 0
        self._sums.copy_(state["sums"])

    def compute(self, prefix: str = "") -> dict[str, float]:
        """The pass's mean loss and metrics, as Python floats (one host sync)."""
        self._reduce()
        sums = self._sums if self.reduce is None else self.reduce(self._sums.clone())
        n, loss, a, b, sy, syy, values = sums.tolist()
        if n == 0:
            return {}
        logs = {f"{prefix}loss": loss / n}
        if self.classification:
            logs[f"{prefix}accuracy"] = a / n
        else:
            sst = syy - sy * sy / values
            logs[f"{prefix}mse"] = a / values
            logs[f"{prefix}mae"] = b / values
            logs[f"{prefix}r2"] = 1.0 - a / sst if sst > 0 else float("nan")
        return logs
