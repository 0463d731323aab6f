"""Feature scaling, fitted on the training split only and applied unchanged to val, test and new inputs.

- ``standardize``: x' = (x - μ) / σ, with μ and σ the training split's mean and (population) standard
  deviation.
- ``minmax``: x' = (x - min) / (max - min), mapping the training split's range onto [0, 1].
- ``none``: inputs are used as they are.

Statistics are per feature for tabular data and sequences given as vectors (samples of shape ``(d,)``: one
μ, σ per column) and per channel for images and other channels-first data (samples of shape ``(C, ...)``:
one μ, σ per channel over all samples and positions). A feature or channel that is constant on the training
split has σ = 0 (or max - min = 0): it is divided by 1 instead, so it becomes 0 (minmax: 0), never NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from descend.data.core import as_tensor
from descend.errors import UserError

SCALES = ("standardize", "minmax", "none")


def as_float_inputs(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Raw inputs as float32; 8-bit images (uint8, 0..255) become floats in [0, 1]."""
    t = as_tensor(x)
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32)


_ROWS = 1 << 16
#: float32 keeps about 7 significant digits; variation below this fraction of a feature's magnitude is lost
_PRECISION = 1e-6
#: beyond this magnitude, squares (a loss, a variance) overflow float32 when the inputs are used unscaled
_LARGE = 1e18


def _warn_extreme(kind: str, scale: torch.Tensor, largest: torch.Tensor) -> None:
    """Warn about features float32 cannot train well on: variation lost to precision, or magnitudes whose
    squares overflow."""
    lost = ((scale > 0) & (scale < _PRECISION * largest)).nonzero().flatten().tolist()
    if lost:
        warnings.warn(f"{kind}: feature {lost[0]} varies by {float(scale[lost[0]]):.3g} around values of "
                      f"{float(largest[lost[0]]):.3g}; float32 keeps about 7 digits, so its variation is mostly "
                      f"lost ({len(lost)} such features); subtract an offset first", UserWarning, stacklevel=4)
    if float(largest.max()) > _LARGE:
        warnings.warn(f"{kind}: inputs reach {float(largest.max()):.3g}; they are scaled with float64 statistics, "
                      "but such magnitudes overflow float32 elsewhere (raw inputs, inverse transforms)",
                      UserWarning, stacklevel=4)


class Scaler:
    """A fitted feature scaling: ``transform(x) = (x - shift) / scale``.

    Build one with :meth:`fit` on the training inputs; :meth:`transform` applies it to any raw inputs of the
    same per-sample shape (8-bit images are first mapped to [0, 1], as the loaders do);
    :meth:`state_dict`/:meth:`from_state_dict` save and restore it (tensors and a string, no pickle);
    :meth:`to_json`/:meth:`from_json` do the same as plain JSON values (what a run directory keeps).
    """

    def __init__(self, kind: str, shift: torch.Tensor, scale: torch.Tensor) -> None:
        if kind not in SCALES or kind == "none":
            raise UserError(f"scale must be one of {', '.join(SCALES[:2])} for a Scaler, got {kind!r}")
        self.kind = kind
        self.shift = shift.to(torch.float32)
        self.scale = scale.to(torch.float32)

    @classmethod
    def fit(cls, kind: str, x: np.ndarray | torch.Tensor) -> Scaler:
        """Fit ``kind`` ("standardize" or "minmax") on the training inputs ``x`` of shape ``(N, *shape)``."""
        t = as_float_inputs(x)
        if t.shape[0] == 0:
            raise UserError("cannot fit feature scaling on an empty training split")
        # per feature for (N, d); per channel (dim 1) for (N, C, ...)
        dims = (0,) if t.ndim <= 2 else (0, *range(2, t.ndim))
        keep = (1,) * (t.ndim - 2)
        if kind == "standardize":
            # two passes, in float64: σ² = mean((x - μ)²), accurate for millions of pixels, and squares of 1e20
            # do not overflow (float32 ends at 3.4e38); rows in chunks keep the float64 copy small
            count = t.numel() // (t.shape[1] if t.ndim > 1 else 1)
            shift = t.sum(dim=dims, dtype=torch.float64) / count
            mean = shift.reshape(*shift.shape, *keep)
            squares = sum((chunk.double() - mean).square().sum(dim=dims) for chunk in t.split(_ROWS))
            scale = (squares / count).sqrt()
        elif kind == "minmax":
            shift = t.amin(dim=dims).to(torch.float64)
            scale = t.amax(dim=dims).to(torch.float64) - shift
        else:
            raise UserError(f"scale must be one of {', '.join(SCALES)}, got {kind!r}")
        _warn_extreme(kind, scale, torch.maximum(t.amax(dim=dims), -t.amin(dim=dims)).double())
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        shape = (*shift.shape, *keep)
        return cls(kind, shift.reshape(shape), scale.reshape(shape))

    def transform(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Scaled float32 inputs, on the device of ``x``."""
        t = as_float_inputs(x)
        return (t - self.shift.to(t.device)) / self.scale.to(t.device)

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """The raw (float) inputs that :meth:`transform` maps to ``x``."""
        return x * self.scale.to(x.device) + self.shift.to(x.device)

    def state_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "shift": self.shift.clone(), "scale": self.scale.clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> Scaler:
        return cls(str(state["kind"]), torch.as_tensor(state["shift"]), torch.as_tensor(state["scale"]))

    def to_json(self) -> dict[str, object]:
        """The scaler as JSON values: ``{"kind", "shift", "scale"}`` with nested lists of the statistics' shape."""
        return {"kind": self.kind, "shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Scaler:
        """The scaler :meth:`to_json` wrote."""
        try:
            return cls(str(value["kind"]), torch.tensor(value["shift"]), torch.tensor(value["scale"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"the saved feature scaling is not readable ({e}); was the file edited?") from None

    def __repr__(self) -> str:
        return f"Scaler({self.kind!r}, features={tuple(self.shift.shape)})"


def fit_scaler(scale: str, x_train: np.ndarray | torch.Tensor) -> Scaler | None:
    """The scaler for ``scale`` fitted on the training inputs, or ``None`` for ``"none"``."""
    if scale not in SCALES:
        raise UserError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale == "none":
        return None
    return Scaler.fit(scale, x_train)
