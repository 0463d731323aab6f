"""The one block every builder repeats, and the options that shape it.

A block is, in this order (each part only when switched on)::

    Linear / Conv  →  batch norm  →  activation  →  pooling (CNNs)  →  dropout

* batch norm normalizes the pre-activations z̃ = (z − μ_B)/σ_B, then ẑ = γ ⊙ z̃ + β (Ioffe & Szegedy 2015);
  the Linear/Conv in front of it then has no bias, because β already is one;
* with ``activation="maxout"`` the Linear/Conv makes k pieces per unit, batch norm sees all of them, and
  :class:`~descend.models.activations.Maxout` keeps the largest, so the block still has ``width`` outputs;
* dropout (``torch.nn.Dropout``, element-wise) zeroes each output with probability p during training and
  scales the rest by 1/(1 − p): "inverted" dropout, so nothing changes at test time (Srivastava et al. 2014
  scale the weights by 1 − p at test time instead, which gives the same expected outputs). ``dropout``
  is one p for every block or a list with one p per block (layer groups: hidden layers, conv blocks, head);
* ``batch_norm_momentum`` is the running averages' update rate, r ← (1 − m)·r + m·batch statistic (torch's
  convention, default 0.1); ``None`` keeps the cumulative average over all training batches instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from descend.errors import UserError
from descend.models.activations import ACTIVATION, MAXOUT_K, make_activation, pieces
from descend.models.init import INIT, INIT_STD
from descend.options import Boolean, Either, ListOf, Option, Optional, number

_P = number(0, 1, closed="left")
#: The options every builder shares; the defaults are the builders' (their signatures).
BLOCK_OPTIONS: tuple[Option, ...] = (
    ACTIVATION,
    Option("batch_norm", Boolean(), doc="batch norm after each Linear/Conv (which then has no bias)"),
    Option("dropout", Either(_P, ListOf(_P)), doc="dropout p of every block, or a list with one p per block"),
    INIT,
    INIT_STD,
    MAXOUT_K,
    Option("negative_slope", number(0, 1, closed="left"), doc="slope a of leaky_relu for x < 0"),
    Option("batch_norm_momentum", Optional(number(0, 1, closed="right"), "none (a cumulative average)"),
           doc="update rate m of batch norm's running averages"),
)


@dataclass(frozen=True)
class BlockOptions:
    """The options every builder shares, checked by the builder. See the module docstring for the block."""

    activation: str
    batch_norm: bool
    dropout: float | tuple[float, ...]
    init: str
    init_std: float
    maxout_k: int
    negative_slope: float
    batch_norm_momentum: float | None

    def __post_init__(self) -> None:
        if isinstance(self.dropout, list):
            object.__setattr__(self, "dropout", tuple(self.dropout))

    def dropouts(self, blocks: int) -> list[float]:
        """One dropout probability per block: the single value repeated, or the list (which must fit)."""
        if not isinstance(self.dropout, tuple):
            return [float(self.dropout)] * blocks
        if len(self.dropout) != blocks:
            raise UserError(f"dropout lists one probability per block: this model has {blocks} blocks, the list "
                            f"has {len(self.dropout)} ({list(self.dropout)})")
        return [float(p) for p in self.dropout]

    @property
    def pieces(self) -> int:
        """Outputs per unit of the Linear/Conv layer: k for maxout, 1 otherwise."""
        return pieces(self.activation, self.maxout_k)


def block(layer: type[nn.Module], n_in: int, width: int, opts: BlockOptions, *, dropout: float,
          pool: nn.Module | None = None, **layer_kwargs: object) -> list[nn.Module]:
    """One block: ``layer(n_in, width·pieces)`` → batch norm → activation → ``pool`` → dropout(``dropout``)."""
    n_out = width * opts.pieces
    parts: list[nn.Module] = [layer(n_in, n_out, bias=not opts.batch_norm, **layer_kwargs)]
    if opts.batch_norm:
        norm = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}[layer]
        parts.append(norm(n_out, momentum=opts.batch_norm_momentum))
    parts.append(make_activation(opts.activation, negative_slope=opts.negative_slope, maxout_k=opts.maxout_k))
    if pool is not None:
        parts.append(pool)
    if dropout > 0:
        parts.append(nn.Dropout(dropout))
    return parts
