"""Gradient clipping: rescale the whole gradient to a maximum norm, and/or clip each entry to a range.

Clipping by norm (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks") keeps the
gradient's direction: g <- g · min(1, c / ||g||). Clipping by value bounds every entry to [-c, c].
"""

from __future__ import annotations

import torch
from torch import nn


def clip_gradients(model: nn.Module, max_norm: float | None, max_value: float | None) -> torch.Tensor | None:
    """Clip ``model``'s gradients as asked; returns their norm before clipping (None when clipping is off)."""
    if max_norm is None and max_value is None:
        return None
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is not None:
        norm = nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    else:
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params])))
    if max_value is not None:
        nn.utils.clip_grad_value_(params, max_value, foreach=True)
    return norm
