"""``summary(model, input_shape)``: the layers of a model, the shape of what each gives, and its parameters.

One forward pass of a batch of two zero samples, in eval mode and without gradients, with a hook on every leaf
module (a module without children), as Keras' ``model.summary()`` and torchinfo show it. The batch dimension is
shown as ``B`` (any batch size), or as the run's batch size when one is given::

    layer  type    output shape  parameters
    0      Linear  (B, 32)              448
    1      ReLU    (B, 32)                0
    ...
    total 2,435 parameters (2,435 trainable)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError

HEADER = ("layer", "type", "output shape", "parameters")


@dataclass
class ModelSummary:
    """The rows ``(name, type, output shape, parameters)`` of :func:`summary`, printed as a table by ``str()``.

    An output shape leaves out the batch dimension (``(8,)`` for a ``(batch, 8)`` output); ``batch`` is what the
    table prints in its place (``"B"`` unless a batch size was given).
    """

    rows: list[tuple[str, str, tuple[int, ...], int]]
    total: int
    trainable: int
    batch: str = "B"

    def shape_text(self, shape: tuple[int, ...]) -> str:
        return "(" + ", ".join([self.batch, *map(str, shape)]) + ")" if shape else "-"

    def __str__(self) -> str:
        cells = [HEADER] + [(name, kind, self.shape_text(shape), f"{count:,}")
                            for name, kind, shape, count in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>{widths[3]}}" for a, b, c, d in cells]
        lines.append(f"total {self.total:,} parameters ({self.trainable:,} trainable)")
        return "\n".join(lines)


@torch.no_grad()
def summary(model: nn.Module, input_shape: Sequence[int], batch_size: int | None = None) -> ModelSummary:
    """The model's leaf layers in call order, with their output shapes (the batch dimension shown as ``B``, or as
    ``batch_size`` when given) and their parameters. A batch of two samples goes through the model."""
    rows, hooks = [], []

    def record(module, inputs, output):
        shape = tuple(output.shape)[1:] if isinstance(output, torch.Tensor) and output.dim() else ()
        rows.append((names[module], type(module).__name__, shape,
                     sum(p.numel() for p in module.parameters(recurse=False))))

    names = {m: name or type(m).__name__ for name, m in model.named_modules() if not list(m.children())}
    for module in names:
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        model.eval()(torch.zeros(2, *input_shape, device=device))
    except RuntimeError as e:
        raise UserError(f"the model cannot take inputs of shape {tuple(input_shape)}: "
                        f"{str(e).strip().splitlines()[0]}") from None
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    return ModelSummary(rows, total, sum(p.numel() for p in model.parameters() if p.requires_grad),
                        "B" if batch_size is None else str(batch_size))
