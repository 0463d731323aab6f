"""Activation functions, by their usual names.

==============  ==================================================  ==========================
name            formula                                             layer
==============  ==================================================  ==========================
``sigmoid``     σ(x) = 1 / (1 + e^(−x))                             ``torch.nn.Sigmoid``
``tanh``        tanh(x)                                             ``torch.nn.Tanh``
``relu``        max(0, x)                                           ``torch.nn.ReLU``
``leaky_relu``  x if x ≥ 0 else a·x  (a = ``negative_slope``)       ``torch.nn.LeakyReLU``
``elu``         x if x ≥ 0 else α(e^x − 1)  (α = 1)                 ``torch.nn.ELU``
``gelu``        x·Φ(x)  (Φ the standard normal CDF)                 ``torch.nn.GELU``
``maxout``      max(w₁ᵀx + b₁, …, w_kᵀx + b_k)                      :class:`Maxout` (below)
==============  ==================================================  ==========================

Torch has every one of these except Maxout, so only :class:`Maxout` is written here. A maxout unit owns k
affine pieces: the layer before it produces k outputs per unit and :class:`Maxout` keeps the largest.
"""

from __future__ import annotations

import torch
from torch import nn

from descend.options import OneOf, Option, integer

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "maxout")
ACTIVATION = Option("activation", OneOf(*ACTIVATIONS), "relu", "the non-linearity after each Linear/Conv")
MAXOUT_K = Option("maxout_k", integer(2), 2, "pieces per maxout unit")


class Maxout(nn.Module):
    """Maxout(k): the largest of k pieces, ``max(w₁ᵀx + b₁, …, w_kᵀx + b_k)`` (Goodfellow et al. 2013).

    The input has ``C·k`` channels on dimension 1 (features of a Linear layer, channels of a Conv layer)
    and the output has ``C``. Unit ``c`` takes the maximum over the contiguous pieces ``c·k, …, c·k+k−1``;
    any trailing dimensions (length, height, width) are kept. With ``k = 2`` and a Linear layer in front
    this is exactly the two-piece unit ``max(w₁ᵀx + b₁, w₂ᵀx + b₂)``.
    """

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = MAXOUT_K.check("Maxout", k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels % self.k:
            raise ValueError(f"Maxout({self.k}) needs a multiple of {self.k} channels, got {channels}")
        return x.unflatten(1, (channels // self.k, self.k)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def make_activation(name: str, *, negative_slope: float = 0.01, maxout_k: int = 2) -> nn.Module:
    """The activation layer called ``name``; torch's own module wherever torch has one."""
    ACTIVATION.check("make_activation", name)
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name == "maxout":
        return Maxout(maxout_k)
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}[name]()


def pieces(name: str, maxout_k: int) -> int:
    """How many outputs the layer before the activation makes per unit: k for maxout, 1 otherwise."""
    return maxout_k if name == "maxout" else 1
