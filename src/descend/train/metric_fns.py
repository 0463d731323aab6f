"""Named metrics beyond the built-in ones, and your own: ``Trainer(..., metrics=["f1", "auroc", my_metric])``.

Each is accumulated on the device over a pass (training epoch or evaluation) and read once at its end, and is
logged as ``train_<name>`` / ``val_<name>`` like the built-in loss and accuracy, so early stopping, checkpoints
and the plateau schedule can monitor it (``monitor="val_f1"``; the mode is inferred from the name: errors go
down, scores go up).

Classification (predicted class: argmax of the logits, or logit > 0 for one output unit):

- ``accuracy`` (always logged), ``top{k}_accuracy`` (e.g. ``top5_accuracy``): the true class is among the k
  largest logits.
- ``precision``, ``recall``, ``f1``: macro averages over the classes that occur in the targets or predictions,
  from the pass's confusion matrix (F1 = 2PR / (P + R) per class, as in scikit-learn's ``average="macro"``).
- ``auroc``: area under the ROC curve (Hanley & McNeil 1982); for K > 2 classes the macro one-vs-rest average.
  It keeps the pass's scores on the device and computes the area with scikit-learn at the end.

Regression: ``mse``, ``mae``, ``r2`` (always logged), ``rmse`` = √mse.

A callable ``fn(outputs, targets) -> scalar tensor`` is averaged over batches weighted by batch size and logged
under its ``__name__`` (give it a name that says whether lower or higher is better, e.g. ``my_error`` or
``my_score``, or pass ``mode=`` to the monitor).
"""

from __future__ import annotations

import math
import re

import torch

from ..errors import UserError

BUILT_IN = {"classification": ("accuracy",), "regression": ("mse", "mae", "r2")}
NAMED = {"precision": "classification", "recall": "classification", "f1": "classification",
         "auroc": "classification", "rmse": "regression"}
_TOP_K = re.compile(r"top(\d+)_accuracy$")


def predicted_class(out: torch.Tensor) -> torch.Tensor:
    """The predicted class of each row of logits: the first largest, or logit > 0 for one output unit.

    ``max(dim=1).indices`` is ``argmax(dim=1)`` (first maximum, NaN counts as largest), about twice as fast on the
    CPU for the few columns of a classifier's outputs.
    """
    if out.dim() < 2 or out.shape[1] == 1:
        return (out.reshape(-1) > 0).long()
    return out.max(dim=1).indices


def check(metrics, task: str) -> list:
    """The requested metrics for ``task``, checked (names known and fitting the task; callables as they are)."""
    if isinstance(metrics, (str, bytes)) or not hasattr(metrics, "__iter__"):
        raise UserError(f"metrics must be a list of names or callables, got {metrics!r}")
    checked = []
    for metric in metrics:
        if callable(metric):
            checked.append(metric)
            continue
        kind = "classification" if metric in BUILT_IN["classification"] or _TOP_K.match(str(metric)) else \
            "regression" if metric in BUILT_IN["regression"] else NAMED.get(metric)
        if kind is None:
            raise UserError(f"unknown metric {metric!r}; choose from: {', '.join(names())}, or pass a callable "
                            "fn(outputs, targets) -> scalar tensor")
        if kind != task:
            raise UserError(f"metric {metric!r} is for {kind}, but the data is a {task} task")
        if metric not in BUILT_IN[task]:
            checked.append(metric)
    return checked


def names() -> list[str]:
    return [*BUILT_IN["classification"], "top5_accuracy", *BUILT_IN["regression"], *NAMED]


def metric_name(metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", type(metric).__name__)


class OneProcess:
    """How a pass's running values combine over the processes of a data-parallel run: in one process they are
    the whole (:class:`descend.distributed.trainer.ProcessGroup` sums and concatenates them over every process)."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over the processes."""
        return tensor

    def cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """The processes' ``tensor`` s concatenated along the first dimension, in rank order."""
        return tensor

    def loss_weight(self, samples: int) -> float | torch.Tensor:
        """What the running batch's mean loss counts for in the pass's mean loss: its number of samples (in one
        process; a data-parallel rank gives its chunk's part of the global batch's)."""
        return samples


class Accumulator:
    """One metric's running state for one pass, on the device: ``update`` per batch, ``compute`` once."""

    def __init__(self, metric, device: torch.device):
        self.metric, self.name, self.device = metric, metric_name(metric), device
        self.state: torch.Tensor | None = None  # allocated on the first batch (its size needs the outputs)
        self._scores: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor) -> None:
        m, out = self.metric, out.detach().float()
        if m == "auroc":
            self._scores.append((out, y))
            return
        if callable(m):
            n = float(y.shape[0])
            value = torch.as_tensor(m(out, y), device=out.device).detach().double().reshape(())
            part = torch.stack([value * n, torch.full((), n, dtype=torch.float64, device=out.device)])
        elif _TOP_K.match(m):
            k = min(int(_TOP_K.match(m).group(1)), out.shape[1])
            hit = (out.topk(k, dim=1).indices == y.reshape(-1, 1)).any(dim=1).sum().double()
            part = torch.stack([hit, torch.full((), float(y.shape[0]), dtype=torch.float64, device=out.device)])
        elif m == "rmse":
            err = (out.double() - y.reshape(out.shape).double()).square()
            part = torch.stack([err.sum(), torch.full((), float(err.numel()), dtype=torch.float64,
                                                      device=out.device)])
        else:  # precision / recall / f1: the confusion matrix, rows true class, columns predicted
            k = max(out.shape[1], 2)
            pred = predicted_class(out)
            part = torch.bincount(y.reshape(-1) * k + pred, minlength=k * k).double()
        self.state = part if self.state is None else self.state + part

    def state_dict(self) -> dict:
        if self.metric == "auroc" and self._scores:
            return {"out": torch.cat([o for o, _ in self._scores]), "y": torch.cat([y for _, y in self._scores])}
        return {"state": self.state} if self.state is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self.state = state["state"].to(self.device) if "state" in state else None
        self._scores = [(state["out"].to(self.device), state["y"].to(self.device))] if "out" in state else []

    def compute(self, processes: OneProcess | None = None) -> float:
        """The pass's value (one host sync), over every process of a data-parallel run with ``processes``
        (each process calls it at the same point: the sums travel through collective operations)."""
        m, processes = self.metric, processes or OneProcess()
        if m == "auroc":
            return _auroc([tuple(processes.cat(torch.cat(part)) for part in zip(*self._scores))] if self._scores
                          else [])
        if self.state is None:
            return math.nan
        state = processes.sum(self.state.clone())
        if callable(m) or _TOP_K.match(m):
            total, n = state.tolist()
            return total / n if n else math.nan
        if m == "rmse":
            total, n = state.tolist()
            return math.sqrt(total / n) if n else math.nan
        k = int(round(math.sqrt(state.numel())))
        cm = state.reshape(k, k)
        tp, actual, predicted = cm.diagonal(), cm.sum(dim=1), cm.sum(dim=0)
        present = (actual + predicted) > 0
        precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
        value = {"precision": precision, "recall": recall,
                 "f1": torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall),
                                   torch.zeros_like(tp))}[m]
        return float(value[present].mean()) if bool(present.any()) else math.nan


def _auroc(scores: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    from sklearn.metrics import roc_auc_score  # imported when a run asks for AUROC

    if not scores:
        return math.nan
    out = torch.cat([o for o, _ in scores]).cpu()
    y = torch.cat([t for _, t in scores]).cpu().numpy()
    if len(set(y.tolist())) < 2:
        return math.nan  # undefined with one class present
    if out.shape[1] == 1:
        return float(roc_auc_score(y, out[:, 0].numpy()))
    prob = out.softmax(dim=1).numpy()
    if out.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    if len(set(y.tolist())) < out.shape[1]:
        return math.nan  # one-vs-rest needs every class among the targets
    return float(roc_auc_score(y, prob, multi_class="ovr", average="macro"))
