"""Losses and metrics, accumulated on the device.

Losses: ``cross_entropy`` −Σ y log softmax(z), ``binary_cross_entropy`` on logits (one output unit,
targets 0/1), ``mse`` mean (ŷ − y)², ``mae`` mean |ŷ − y|; or your own: any callable ``loss(outputs, targets)``
returning a scalar tensor, e.g. ``torch.nn.CrossEntropyLoss(label_smoothing=0.1, weight=w)`` (a module is moved
to the training device). Metrics: accuracy for classification; mse, mae and R² = 1 − Σ(ŷ − y)² / Σ(y − ȳ)² for
regression; more by name or your own (:mod:`descend.train.metric_fns`).

Sums are kept as device tensors and read once per epoch (:meth:`MetricSums.compute`), so the training loop never
waits for the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .metric_fns import Accumulator, OneProcess, predicted_class


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


def resolve_loss(loss, task: str):
    """The loss for ``task``: the given name after checking it fits (cross_entropy / mse by default), or the
    user's callable as it is."""
    if loss is None:
        return "cross_entropy" if task == "classification" else "mse"
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if (loss in CLASSIFICATION_LOSSES) != (task == "classification"):
        kind = "classification" if loss in CLASSIFICATION_LOSSES else "regression"
        raise UserError(f"loss {loss!r} is for {kind}, but the data is a {task} task; "
                        f"use {'cross_entropy' if task == 'classification' else 'mse or mae'}")
    return loss


def check_loss(loss) -> None:
    """A loss must be a known name, a callable (a function or ``nn.Module``), or None (from the task)."""
    if loss is not None and not callable(loss) and loss not in LOSSES:
        raise UserError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}, or pass a callable "
                        "loss(outputs, targets) such as torch.nn.CrossEntropyLoss(label_smoothing=0.1)")


def loss_function(loss):
    """The callable for a resolved loss; torch's BCEWithLogitsLoss gets the (N,) float targets it needs."""
    if isinstance(loss, str):
        return LOSSES[loss]
    if isinstance(loss, nn.BCEWithLogitsLoss):
        return lambda out, y: loss(out.reshape(-1), y.to(out.dtype).reshape(-1))
    return loss


# torch's modules of the built-in losses: a recipe's label smoothing or class weights make a CrossEntropyLoss
_MODULES = {nn.CrossEntropyLoss: "cross_entropy", nn.BCEWithLogitsLoss: "binary_cross_entropy", nn.MSELoss: "mse",
            nn.L1Loss: "mae"}


def builtin_loss_name(loss) -> str | None:
    """The built-in loss that ``loss`` (a name or a torch loss module) computes, or None for the user's own."""
    return loss if isinstance(loss, str) else _MODULES.get(type(loss))


def is_binary(loss) -> bool:
    """Whether the loss takes one logit per sample (binary cross-entropy)."""
    return builtin_loss_name(loss) == "binary_cross_entropy"


def make_loss(name: str | None, task: str, *, label_smoothing: float = 0.0, class_weights=None):
    """The recipe's loss: its name, or cross-entropy as a module when label smoothing or class weights are set
    (``torch.nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)``)."""
    loss = resolve_loss(name, task)
    if not label_smoothing and class_weights is None:
        return loss
    if loss != "cross_entropy":
        raise UserError(f"label_smoothing and class_weights apply to the cross_entropy loss, not {loss!r}")
    weight = None if class_weights is None else torch.tensor([float(w) for w in class_weights])
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=float(label_smoothing))


def num_outputs(loss, task: str, num_classes: int | None, y: torch.Tensor) -> int:
    """How many output units the model needs for this loss and data."""
    if is_binary(loss):
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
    ``metrics`` are extra metrics (names or callables, see :mod:`descend.train.metric_fns`), checked by the caller;
    they are updated every step, so they cost device work only when asked for. ``processes`` combines the sums
    over the processes of a data-parallel run (:class:`~descend.train.metric_fns.OneProcess` by default).
    """

    def __init__(self, loss, device: torch.device, *, task: str | None = None, metrics=(), budget: int = 1 << 22,
                 processes: OneProcess | None = None, target_scaler=None):
        self.loss, self.processes = loss, processes or OneProcess()
        # standardised regression targets: mse, mae and R² in the targets' own units (the loss stays the objective)
        self.target_scaler = target_scaler
        self.classification = task == "classification" if task is not None else loss in CLASSIFICATION_LOSSES
        self.budget = budget
        # samples, Σ batch-loss·batch-size, correct | Σ(ŷ−y)², Σ|ŷ−y|, Σy, Σy², target values
        self._sums = torch.zeros(7, dtype=torch.float64, device=device)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._held = 0
        self.extra = [Accumulator(m, device) for m in metrics]

    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """Remember one batch (no device work); its values join the sums at the next reduction."""
        self._pending.append((out.detach(), y, loss.detach(), self.processes.loss_weight(y.shape[0])))
        self._held += out.numel()
        for metric in self.extra:
            metric.update(out, y)
        if self._held > self.budget:
            self._reduce()

    @torch.no_grad()
    def _reduce(self) -> None:
        """Add the held batches to the sums: one pass of vectorised device ops, no host sync."""
        if not self._pending:
            return
        outs, ys, losses, weights = zip(*self._pending)
        self._pending, self._held = [], 0
        counts = torch.tensor([y.shape[0] for y in ys], dtype=torch.float64, device=self._sums.device)
        out, y = torch.cat([o.float() for o in outs]), torch.cat(ys)
        zero = torch.zeros((), dtype=torch.float64, device=out.device)
        if self.classification:
            a, b, sy, syy = (predicted_class(out) == y).sum().double(), zero, zero, zero
        else:
            y, out = y.reshape(out.shape).double(), out.double()
            if self.target_scaler is not None:
                y, out = self.target_scaler.inverse_transform(y), self.target_scaler.inverse_transform(out)
            err = out - y
            a, b, sy, syy = err.square().sum(), err.abs().sum(), y.sum(), y.square().sum()
        if not all(isinstance(w, int) for w in weights):  # a data-parallel chunk's part of its batch
            counts_of_loss = torch.stack([torch.as_tensor(w, dtype=torch.float64).to(counts.device) for w in weights])
        else:
            counts_of_loss = counts
        loss_sum = (torch.stack(losses).double() * counts_of_loss).sum()
        self._sums += torch.stack([counts.sum(), loss_sum, a, b, sy, syy, zero + y.numel()])

    def names(self) -> list[str]:
        """The names :meth:`compute` gives (without prefix)."""
        base = ["loss", "accuracy"] if self.classification else ["loss", "mse", "mae", "r2"]
        return base + [metric.name for metric in self.extra]

    def state_dict(self) -> dict:
        self._reduce()
        return {"sums": self._sums, **{f"metric{i}": m.state_dict() for i, m in enumerate(self.extra)}}

    def load_state_dict(self, state: dict) -> None:
        self._pending, self._held = [], 0
        self._sums.copy_(state["sums"])
        for i, metric in enumerate(self.extra):
            metric.load_state_dict(state.get(f"metric{i}", {}))

    def compute(self, prefix: str = "") -> dict[str, float]:
        """The pass's mean loss and metrics, as Python floats (one host sync, and one per extra metric)."""
        self._reduce()
        n, loss, a, b, sy, syy, values = self.processes.sum(self._sums.clone()).tolist()
        if n == 0:
            return {}
        logs = {f"{prefix}loss": loss / n}
        if self.classification:
            logs[f"{prefix}accuracy"] = a / n
        else:
            sst = syy - sy * sy / values
            logs[f"{prefix}mse"] = a / values
            logs[f"{prefix}mae"] = b / values
            logs[f"{prefix}r2"] = 1.0 - a / sst if sst > 0 else math.nan
        for metric in self.extra:
            logs[f"{prefix}{metric.name}"] = metric.compute(self.processes)
        return logs
