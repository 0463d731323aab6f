"""The one block every builder repeats, and the checks on the options that shape it.

A block is, in this order (each part only when switched on)::

    Linear / Conv  →  batch norm  →  activation  →  pooling (CNNs)  →  dropout

* batch norm normalizes the pre-activations z̃ = (z − μ_B)/σ_B, then ẑ = γ ⊙ z̃ + β (lecture 04);
  the Linear/Conv in front of it then has no bias, because β already is one;
* with ``activation="maxout"`` the Linear/Conv makes k pieces per unit, batch norm sees all of them, and
  :class:`~descend.models.activations.Maxout` keeps the largest, so the block still has ``width`` outputs;
* dropout (``torch.nn.Dropout``, element-wise) zeroes each output with probability p during training and
  scales the rest by 1/(1 − p) ("inverted" dropout, so nothing changes at test time; lecture 03/04). ``dropout``
  is one p for every block or a list with one p per block (layer groups: hidden layers, conv blocks, head);
* ``batch_norm_momentum`` is the running averages' update rate, r ← (1 − m)·r + m·batch statistic (torch's
  convention, default 0.1); ``None`` keeps the cumulative average over all training batches instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

from torch import nn

from descend.errors import UserError
from descend.models.activations import check_activation, make_activation, pieces
from descend.models.init import check_init

POOLS = ("none", "max", "avg")


def positive_int(name: str, value: object) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (NumPy integers too), else :class:`UserError`."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def positive_ints(name: str, values: object, *, allow_empty: bool = True) -> list[int]:
    """A list of integers >= 1 (e.g. layer widths), else :class:`UserError`."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise UserError(f"{name} must be a list of integers >= 1, got {values!r}")
    if not values and not allow_empty:
        raise UserError(f"{name} must name at least one layer, got {list(values)!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise UserError(f"{name} must be a list of integers >= 1, got {list(values)!r}")
    return [int(value) for value in values]


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else :class:`UserError` listing them."""
    if value not in allowed:
        raise UserError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class BlockOptions:
    """The options every builder shares, checked once. See the module docstring for the block they shape."""

    activation: str = "relu"
    batch_norm: bool = False
    dropout: float | tuple[float, ...] = 0.0
    init: str = "he_uniform"
    init_std: float = 0.01
    maxout_k: int = 2
    negative_slope: float = 0.01
    batch_norm_momentum: float | None = 0.1

    def __post_init__(self) -> None:
        check_activation(self.activation)
        if not isinstance(self.batch_norm, bool):
            raise UserError(f"batch_norm must be true or false, got {self.batch_norm!r}")
        if isinstance(self.dropout, Sequence) and not isinstance(self.dropout, str):
            object.__setattr__(self, "dropout", tuple(self.dropout))
        for p in self.dropout if isinstance(self.dropout, tuple) else (self.dropout,):
            if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= p < 1.0:
                raise UserError(f"dropout must be a probability in [0, 1), got {p!r} (a list gives one per block)")
        m = self.batch_norm_momentum
        if m is not None and (isinstance(m, bool) or not isinstance(m, Real) or not 0.0 < m <= 1.0):
            raise UserError(f"batch_norm_momentum must be in (0, 1] (or none for a cumulative average), got {m!r}")
        check_init(self.init, self.init_std)
        if isinstance(self.maxout_k, bool) or not isinstance(self.maxout_k, Integral) or self.maxout_k < 2:
            raise UserError(f"maxout_k must be an integer >= 2, got {self.maxout_k!r}")
        slope = self.negative_slope
        if isinstance(slope, bool) or not isinstance(slope, Real) or not math.isfinite(slope):
            raise UserError(f"negative_slope must be a finite number, got {slope!r}")
        if not 0.0 <= slope < 1.0:
            raise UserError(f"negative_slope must be in [0, 1), got {slope!r}")

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
