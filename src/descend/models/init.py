"""Weight initialization: one scheme for every Linear and Conv weight of a model; biases start at zero.

For a weight with ``fan_in`` inputs and ``fan_out`` outputs per unit (a Conv layer counts
``channels × kernel elements`` on each side):

==================  =============================================================  ===========================
name                distribution                                                   reference
==================  =============================================================  ===========================
``xavier_uniform``  U(−b, b),  b = √(6 / (fan_in + fan_out))                       Glorot & Bengio 2010
``xavier_normal``   N(0, σ²),  σ² = 2 / (fan_in + fan_out)                         Glorot & Bengio 2010
``he_uniform``      U(−b, b),  b = g·√(3 / fan_in)                                 He et al. 2015
``he_normal``       N(0, σ²),  σ² = g² / fan_in                                    He et al. 2015
``normal``          N(0, σ²),  σ = ``init_std``
==================  =============================================================  ===========================

He init uses **fan_in mode** (it keeps the second moment of the forward signal from layer to layer) and the
gain ``g`` of the activation that follows, ``g² = Var(z) / E[act(z)²]`` for z ~ N(0, Var(z)):

* ``relu``: g² = 2 (He's variance 2 / fan_in);  ``leaky_relu`` with slope a: g² = 2 / (1 + a²);
* ``elu`` and ``gelu``: g² = 2, as for ReLU, which they follow for x > 0 (torch defines no gain for them);
* ``tanh``: g = 5/3 and ``sigmoid``: g = 1 (torch's ``calculate_gain``);
* ``maxout``: g = 1, because the larger of two i.i.d. N(0, σ²) pieces has second moment σ² already.

The output layer gets the same scheme and gain as the hidden layers. Batch-norm layers start at γ = 1, β = 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from descend.errors import UserError
from descend.options import OneOf, Option, number

INITS = ("xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "normal")
INIT = Option("init", OneOf(*INITS), "he_uniform", "the scheme of every Linear/Conv weight; biases start at 0")
INIT_STD = Option("init_std", number(0, closed="right"), 0.01, "σ of init='normal'")


def check_init(name: str, std: float) -> str:
    """Return ``name`` if it is a known scheme (and ``std`` > 0), else raise :class:`UserError`."""
    INIT_STD.check("initialize", std)
    return INIT.check("initialize", name)


def he_gain(activation: str, negative_slope: float = 0.01) -> float:
    """The gain g of He init for the activation that follows the layer (see the module docstring)."""
    if activation == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + negative_slope**2))
    if activation in ("relu", "elu", "gelu"):
        return math.sqrt(2.0)
    if activation in ("tanh", "sigmoid"):
        return nn.init.calculate_gain(activation)
    if activation == "maxout":
        return 1.0
    raise UserError(f"no He gain for activation {activation!r}")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear ``(out, in)`` or Conv ``(out, in, *kernel)`` weight."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def init_weight(weight: torch.Tensor, init: str, *, gain: float = 1.0, std: float = 0.01) -> None:
    """Fill one weight tensor in place by the scheme ``init`` (``gain`` is He's g, ``std`` the normal's σ)."""
    fan_in, fan_out = fans(weight)
    if init == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif init == "he_uniform":
        bound = gain * math.sqrt(3.0 / fan_in)
        weight.uniform_(-bound, bound)
    elif init == "he_normal":
        weight.normal_(0.0, gain / math.sqrt(fan_in))
    elif init == "normal":
        weight.normal_(0.0, std)
    else:
        check_init(init, std)


@torch.no_grad()
def initialize(
    model: nn.Module, init: str, *, activation: str = "relu", std: float = 0.01, negative_slope: float = 0.01
) -> nn.Module:
    """Initialize every Linear/Conv weight of ``model`` by ``init``; biases 0; batch norm γ = 1, β = 0."""
    check_init(init, std)
    gain = he_gain(activation, negative_slope)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            init_weight(module.weight, init, gain=gain, std=std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()
    return model
