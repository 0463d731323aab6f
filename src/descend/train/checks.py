"""Checks on what the user hands the trainer, done once per fit, before the first step.

Each failure is one :class:`~descend.errors.UserError` naming the problem and the fix: an unknown device, a model,
optimizer or divergence action that do not fit together, data that is not a split, NaN or infinite inputs, labels
outside the classes the loss can take, and a model whose input or output size does not fit the data. The checks
only look: the trainer builds and prepares (``Trainer.prepare``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..data import Split
from ..data.core import as_tensor
from ..errors import UserError
from .divergence import all_finite
from .metrics import num_outputs

DEVICES = ("auto", "cpu", "cuda", "mps")


def check_arguments(model, optimizer, on_divergence: str, checkpoints) -> None:
    """The model, optimizer and divergence action a Trainer is given fit together."""
    if on_divergence == "rollback" and checkpoints is None:
        raise UserError("on_divergence='rollback' reloads the last checkpoint: pass checkpoints=Checkpoints(...)")
    if not isinstance(model, nn.Module) and not hasattr(model, "build"):
        raise UserError(f"model must be a torch.nn.Module or a descend.models spec, got {type(model).__name__}")
    if isinstance(optimizer, torch.optim.Optimizer) and not isinstance(model, nn.Module):
        raise UserError("a ready-made torch optimizer needs a ready-made model; pass descend.optim.create(...) "
                        "without parameters to let the trainer bind it to the model it builds")
    if not (optimizer is None or isinstance(optimizer, (str, torch.optim.Optimizer)) or hasattr(optimizer, "build")):
        raise UserError(f"optimizer must be a name ('adam'), descend.optim.create(...) or a torch optimizer, "
                        f"got {type(optimizer).__name__}")


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device must exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = str(device).split(":")[0]
    if kind not in DEVICES:
        raise UserError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is available; use device = \"auto\" or \"cpu\"")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' was asked for but MPS is not available; use device = \"auto\" or \"cpu\"")
    return torch.device(device)


def as_split(data, what: str) -> Split:
    """A :class:`~descend.data.Split` from a Split or an ``(x, y)`` pair (integer y: classification); floating
    inputs become float32, integer inputs stay integers until the model is known (:func:`model_inputs`)."""
    if isinstance(data, Split):
        return data
    if isinstance(data, Sequence) and len(data) == 2:
        x, y = (as_tensor(v) for v in data)
        x = x if is_integer(x) else x.float()
        if y.dtype.is_floating_point:
            return Split(x, y.float(), "regression", None)
        classes = int(y.max()) + 1 if y.numel() else 0
        return Split(x, y.long(), "classification", classes)
    raise UserError(f"{what} must be a descend.data.Split or an (x, y) pair of tensors, got {type(data).__name__}")


def check_data(split: Split) -> None:
    """Non-empty, finite inputs."""
    if len(split) == 0:
        raise UserError("the data is empty: no samples to train or evaluate on")
    if not all_finite([split.x]):
        raise UserError("the inputs contain NaN or infinite values; clean or impute them before training")


def check_labels(split: Split, loss: str, outputs: int) -> None:
    """Class labels the loss can take: in [0, outputs), or 0/1 for binary cross-entropy."""
    if split.task == "classification":
        lo, hi = int(split.y.min()), int(split.y.max())
        limit = 2 if loss == "binary_cross_entropy" else outputs
        if lo < 0 or hi >= limit:
            raise UserError(f"class labels must be integers in [0, {limit - 1}], found labels from {lo} to {hi}")


def is_integer(x: torch.Tensor) -> bool:
    """Integer inputs (token or category ids, counts, 8-bit pixels), not floating, complex or boolean ones."""
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


@torch.no_grad()
def model_inputs(model: nn.Module | None, x: torch.Tensor, device: torch.device) -> torch.dtype:
    """The dtype ``model`` takes integer inputs ``x`` in: their own when the model takes them (ids for an
    ``nn.Embedding``), else float32 (pixels or counts for linear layers and convolutions), tried on two samples;
    floating inputs keep their dtype, boolean ones and those of a model not built yet (descend's own networks)
    are float32."""
    if not is_integer(x):
        return x.dtype if x.is_floating_point() else torch.float32
    if model is None:
        return torch.float32
    was_training = model.training
    model.eval()
    try:
        for dtype in (x.dtype, torch.float32):
            try:
                model(x[:2].to(device, dtype))
                return dtype
            except (RuntimeError, TypeError, IndexError):
                continue
        # taken in neither: the checks that follow show the error of the dtype the model is made for
        embeds = any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())
        return x.dtype if embeds else torch.float32
    finally:
        model.train(was_training)


@torch.no_grad()
def check_shapes(model: nn.Module, split: Split, loss: str, outputs: int | None, device: torch.device) -> int:
    """Run two samples through the model: it must take the data's input shape and give ``outputs`` values per
    sample (None: any number); returns how many it gives."""
    was_training = model.training
    model.eval()
    try:
        out = model(split.x[:2].to(device))
    except (RuntimeError, IndexError, TypeError) as e:  # a size, an id out of range, a forward that wants more
        first = str(e).strip().splitlines()[0]
        fix = ("integer inputs reach the model as integers when it takes them: each id must be below its "
               "embedding's size" if is_integer(split.x) else "make the model's input size match the data")
        raise UserError(f"the model cannot take inputs of per-sample shape {tuple(split.x.shape[1:])} "
                        f"(torch says: {first}); {fix}") from None
    finally:
        model.train(was_training)
    if out.dim() != 2 or (outputs is not None and out.shape[1] != outputs):
        raise UserError(f"the model gives outputs of shape {tuple(out.shape[1:])} per sample, but the loss "
                        f"{loss!r} on this data needs {outputs or 'one row of values'}; set the last layer's size "
                        f"to {outputs or 'the number of outputs'}")
    return int(out.shape[1])


def logged_names(trainer, metrics: list[str], validation: bool) -> set[str]:
    """The values the trainer itself logs every epoch, ``metrics`` being the names its loss and metric sums give
    (callbacks may add theirs in ``Callback.setup``)."""
    names = {"epoch", "step", "lr", "seconds", *(f"train_{m}" for m in metrics)}
    if validation:
        names.update(f"val_{m}" for m in metrics)
    if trainer.regularizer is not None:
        names.add("train_penalty")
    if trainer.clip_grad_norm is not None or trainer.clip_grad_value is not None:
        names.add("grad_norm")
    return names


def schedule_monitor(schedule) -> str | None:
    """The metric a schedule reacts to (reduce-on-plateau, possibly behind warmup), or None."""
    while schedule is not None:
        if getattr(schedule, "monitor", None):
            return schedule.monitor
        schedule = getattr(schedule, "inner", None)
    return None


def check_split(split: Split, loss, first: bool) -> int | None:
    """Non-empty finite inputs and labels the loss can take; returns the number of outputs the loss needs of the
    model. The first split (the training data) sets it; a later classification split (validation, evaluation)
    gives None: it is checked against the run's model (:func:`check_model`), not its own labels, so a validation
    split that lacks the highest class is fine."""
    run_sets_classes = not first and split.task == "classification"  # a regression split's targets tell their width
    outputs = None if run_sets_classes else num_outputs(loss, split.task, split.num_classes, split.y)
    check_data(split)
    if outputs is not None:
        check_labels(split, loss, outputs)
    return outputs


def check_model(model: nn.Module, split: Split, loss, outputs: int | None, device: torch.device) -> None:
    """The model takes the split's inputs and gives ``outputs`` values per sample (None: as many as the run's
    classes, and the split's labels must be among them)."""
    width = check_shapes(model, split, loss, outputs, device)
    if outputs is None:
        check_labels(split, loss, width)  # the run's classes: as many as the model's outputs
