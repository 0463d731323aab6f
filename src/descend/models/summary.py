"""``summary(model, input_shape)``: the layers of a model, the shape of what each gives, and its parameters.

One forward pass of a batch of two zero samples, in eval mode and without gradients, with a hook on every leaf
module (a module without children), as Keras' ``model.summary()`` and torchinfo show it::

    layer                 output shape    parameters
    0  Linear             (2, 32)                448
    1  ReLU               (2, 32)                  0
    ...
    total 2,435 parameters (2,435 trainable)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UserError


@dataclass
class ModelSummary:
    """The rows ``(name, type, output shape, parameters)`` of :func:`summary`, printed as a table by ``str()``."""

    rows: list[tuple[str, str, tuple[int, ...], int]]
    total: int
    trainable: int

    def __str__(self) -> str:
        named = [(f"{name}  {kind}", str(shape), f"{count:,}") for name, kind, shape, count in self.rows]
        width = max([len("layer"), *(len(a) for a, _, _ in named)])
        shape_width = max([len("output shape"), *(len(b) for _, b, _ in named)])
        lines = [f"{'layer':<{width}}  {'output shape':<{shape_width}}  {'parameters':>12}"]
        lines += [f"{a:<{width}}  {b:<{shape_width}}  {c:>12}" for a, b, c in named]
        lines.append(f"total {self.total:,} parameters ({self.trainable:,} trainable)")
        return "\n".join(lines)


@torch.no_grad()
def summary(model: nn.Module, input_shape: Sequence[int]) -> ModelSummary:
    """The model's leaf layers in call order, with their output shapes for a batch of 2 and their parameters."""
    rows, hooks = [], []

    def record(module, inputs, output):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
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
    return ModelSummary(rows, total, sum(p.numel() for p in model.parameters() if p.requires_grad))
