"""Data augmentation: random label-preserving transformations of training batches.

"The best way to make a machine learning model generalize better is to train it on more data" (Goodfellow,
Bengio & Courville 2016, §7.4); augmentation enlarges the training set artificially: flipping, cropping,
translating, rotating, and adding noise to the input, itself a kind of augmentation. It is off by default and
the trainer applies it to training batches only, never to validation or test data.

Everything works batch-wise on the batch's device with plain tensor ops (no per-sample Python loop, no host
sync), and every random draw comes from the ``torch.Generator`` passed in, so a seeded or restored generator
gives the same augmentations. Each transform draws its random numbers for the whole batch, also for samples it
leaves unchanged, so the stream of draws depends only on the batch shape.

Choose transformations that keep the class (same section): a flip turns a 'b' into a 'd' and a rotation by
180° a '6' into a '9', so flips on digit data change the class; :func:`create` warns about that.

Images are batches ``(N, C, H, W)``; 1-D signals ``(N, L)`` or ``(N, C, L)``.

======================= ======== ============================================================================
option                  inputs   transformation, per sample
======================= ======== ============================================================================
``hflip`` (prob.)       both     reverse the last axis (left ↔ right; time reversal for signals)
``vflip`` (prob.)       images   reverse the height axis (top ↔ bottom)
``crop_padding`` (px)   images   zero-pad by k on every side, crop H×W back at a random offset (0…2k each way)
``rotation`` (°)        images   rotate by θ ~ U(−r, r) about the centre, bilinear, zeros outside
``translate`` (frac.)   images   shift by t ~ U(−s, s)·size in each direction, bilinear, zeros outside
``shift`` (samples)     signals  shift by an integer in [−s, s]; ``shift_mode`` ``"circular"`` or ``"zeros"``
``scale`` (frac.)       signals  multiply by a ~ U(1 − s, 1 + s)
``noise_std`` (σ)       both     add Gaussian noise N(0, σ²) to every value
======================= ======== ============================================================================
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from descend.errors import UserError
from descend.options import Boolean, Either, OneOf, Option, declare, integer, number
from descend.options import describe as describe_table

__all__ = ["Augment", "DEFAULTS", "OPTIONS", "create", "describe", "is_digit_dataset"]

_IMAGE_ONLY = ("vflip", "crop_padding", "rotation", "translate")
_SIGNAL_ONLY = ("shift", "scale")
_ORDERED = ("hflip",)  # reverses the last axis of images and signals alike
_FLIP = Either(number(0, 1), Boolean())
# sizes that multiply a batch's memory (a crop pads every image by k on each side) or index arithmetic:
# bounded, so a typo such as 10**9 is one message, not an allocator's traceback
MAX_CROP_PADDING = 64  # pixels; 4 is usual for 32x32 images, a tenth of the side for larger ones
MAX_SHIFT = 100_000  # samples of a 1-D signal


def is_digit_dataset(name: str | None) -> bool:
    """Digit data sets, where flips change the class: mnist1d, digits, MNIST-like names but Fashion-MNIST."""
    if not name:
        return False
    name = name.lower().replace("-", "_")
    return name in ("mnist1d", "digits") or ("mnist" in name and "fashion" not in name)


class Augment:
    """The enabled transformations, applied in the order of the table above. See :func:`create`."""

    @declare("augment",
             Option("hflip", _FLIP, doc="probability of reversing the last axis; true means 0.5"),
             Option("vflip", _FLIP, doc="probability of reversing the height axis (images); true means 0.5"),
             Option("crop_padding", integer(0, MAX_CROP_PADDING),
                    doc="pixels of zero padding before a random crop (images)"),
             Option("rotation", number(0, 180), doc="largest rotation in degrees (images)"),
             Option("translate", number(0, 1), doc="largest shift as a fraction of the size (images)"),
             Option("shift", integer(0, MAX_SHIFT), doc="largest shift in samples (1-D signals)"),
             Option("shift_mode", OneOf("circular", "zeros"), doc="what fills a shifted signal"),
             Option("scale", number(0, 1, closed="left"), doc="largest relative change of amplitude (signals)"),
             Option("noise_std", number(0), doc="σ of additive Gaussian noise"))
    def __init__(self, hflip: float | bool = 0.0, vflip: float | bool = 0.0, crop_padding: int = 0,
                 rotation: float = 0.0, translate: float = 0.0, shift: int = 0, shift_mode: str = "circular",
                 scale: float = 0.0, noise_std: float = 0.0) -> None:
        self.hflip, self.vflip = (0.5 if p is True else float(p) for p in (hflip, vflip))
        self.crop_padding, self.rotation, self.translate = crop_padding, rotation, translate
        self.shift, self.shift_mode, self.scale, self.noise_std = shift, shift_mode, scale, noise_std
        self.kind: str | None = None  # the data's kind (DatasetInfo.kind) where known; set by create()

    def enabled(self) -> list[str]:
        """Names of the options that are on."""
        return [name for name in DEFAULTS if name != "shift_mode" and getattr(self, name)]

    def __repr__(self) -> str:
        return f"Augment({', '.join(f'{k}={getattr(self, k)!r}' for k in self.enabled())})"

    def check(self, shape: tuple[int, ...] | torch.Size, dtype: torch.dtype = torch.float32) -> None:
        """Refuse a batch shape (N, ...) or dtype the enabled options cannot take (the trainer asks before training),
        and, on tabular data (:attr:`kind`), every option that assumes an order of the features."""
        image = len(shape) == 4
        if not image and len(shape) not in (2, 3):
            raise UserError(f"augmentation needs images (N, C, H, W) or signals (N, L) / (N, C, L), "
                            f"got a batch of shape {tuple(shape)}")
        if self.kind == "tabular":
            ordered = [k for k in (*_ORDERED, *_IMAGE_ONLY, *_SIGNAL_ONLY) if getattr(self, k)]
            if ordered:
                raise UserError(f"augmentation option {ordered[0]} reorders or stretches the axes of images and "
                                "signals; this data is tabular (features in no order), where only noise_std applies")
        misplaced = [k for k in (_SIGNAL_ONLY if image else _IMAGE_ONLY) if getattr(self, k)]
        if misplaced:
            kind = "1-D signals" if image else "images"
            raise UserError(f"augmentation option {misplaced[0]} applies to {kind} only, "
                            f"got a batch of shape {tuple(shape)}")
        if not dtype.is_floating_point and (self.rotation or self.translate or self.scale or self.noise_std):
            raise UserError(f"rotation, translate, scale and noise_std need a floating-point batch, got {dtype}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a training batch; same shape, dtype and device. Labels are never seen, so never changed."""
        self.check(x.shape, x.dtype)
        if self.hflip:
            x = flip(x, -1, self.hflip, generator)
        if self.vflip:
            x = flip(x, -2, self.vflip, generator)
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.rotation or self.translate:
            x = random_affine(x, self.rotation, self.translate, generator)
        if self.shift:
            x = random_shift(x, self.shift, self.shift_mode, generator)
        if self.scale:
            x = random_scale(x, self.scale, generator)
        if self.noise_std:
            x = gaussian_noise(x, self.noise_std, generator)
        return x


# -- the transformations, each for a whole batch ------------------------------------------------------------

def _per_sample(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (x.dim() - 1)))


def _uniform(n: int, low: float, high: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype if x.is_floating_point() else None)
    return low + (high - low) * u


def flip(x: torch.Tensor, dim: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """Reverse axis ``dim`` of each sample with probability p."""
    chosen = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(_per_sample(chosen, x), x.flip(dim), x)


def crop(x: torch.Tensor, padding: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Zero-pad H and W by ``padding``; cut each sample's H×W window at row ``top[i]``, column ``left[i]``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    rows = top.view(n, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
    cols = left.view(n, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """:func:`crop` at offsets (top, left) ~ U{0, …, 2·padding}²; offset ``padding`` is the original image."""
    top, left = torch.randint(0, 2 * padding + 1, (2, x.shape[0]), generator=generator, device=x.device)
    return crop(x, padding, top, left)


def affine(x: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate each image by ``degrees[i]`` (counter-clockwise as displayed, about the centre), then
    translate it by ``shifts[i] = (right, down)`` as fractions of (W, H).

    One bilinear ``grid_sample``; pixels that come from outside the image are 0. Output pixel p (in pixels,
    from the centre, y down) reads input pixel R(θ)ᵀ(p − t) with R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]] the
    counter-clockwise rotation in these coordinates; the matrix below is that map in grid_sample's normalised
    coordinates (x/(W/2), y/(H/2)).
    """
    n, _, h, w = x.shape
    theta = degrees.to(x.dtype) * (math.pi / 180)
    tx, ty = (2 * shifts.to(x.dtype)).unbind(-1)  # normalised coordinates span 2
    cos, sin, aspect = theta.cos(), theta.sin(), w / h
    matrix = torch.stack([
        torch.stack([cos, -sin / aspect, -(cos * tx - sin / aspect * ty)], dim=1),
        torch.stack([sin * aspect, cos, -(sin * aspect * tx + cos * ty)], dim=1),
    ], dim=1)
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, degrees: float, translate: float,
                  generator: torch.Generator) -> torch.Tensor:
    """:func:`affine` with θ ~ U(−degrees, degrees) and shifts ~ U(−translate, translate) per direction."""
    n = x.shape[0]
    return affine(x, _uniform(n, -degrees, degrees, x, generator),
                  _uniform(2 * n, -translate, translate, x, generator).view(n, 2))


def shift_signal(x: torch.Tensor, s: torch.Tensor, mode: str = "circular") -> torch.Tensor:
    """Shift each signal along its last axis by ``s[i]`` samples: out[t] = x[t − s].

    ``mode="circular"`` wraps around (``torch.roll`` per sample); ``"zeros"`` fills vacated samples with 0.
    """
    n, length = x.shape[0], x.shape[-1]
    source = torch.arange(length, device=x.device).view(1, length) - s.view(n, 1)  # (n, L)
    flat = x.reshape(n, -1, length)
    out = flat.gather(-1, (source % length).unsqueeze(1).expand_as(flat))
    if mode == "zeros":
        inside = ((source >= 0) & (source < length)).unsqueeze(1)
        out = torch.where(inside, out, torch.zeros((), dtype=x.dtype, device=x.device))
    return out.reshape(x.shape)


def random_shift(x: torch.Tensor, max_shift: int, mode: str, generator: torch.Generator) -> torch.Tensor:
    """:func:`shift_signal` by s ~ U{−max_shift, …, max_shift}."""
    s = torch.randint(-max_shift, max_shift + 1, (x.shape[0],), generator=generator, device=x.device)
    return shift_signal(x, s, mode)


def random_scale(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Multiply each sample by a ~ U(1 − amount, 1 + amount)."""
    return x * _per_sample(_uniform(x.shape[0], 1 - amount, 1 + amount, x, generator), x)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """x + ε, ε ~ N(0, std²) independently for every value."""
    return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# -- construction from the [augment] config section ---------------------------------------------------------

def create(*, dataset: str | None = None, kind: str | None = None, **options) -> Augment | None:
    """Build the augmentation of the ``[augment]`` config section; ``None`` when every option is off.

    The options are :class:`Augment`'s (:data:`OPTIONS`, :func:`describe`; ``None`` means "not set"; all off
    by default).

    ``dataset`` (the data set's name) only serves the warning that flips change the class of digits; ``kind``
    (``DatasetInfo.kind``) lets :meth:`Augment.check` refuse flips, crops, shifts and rotations on tabular data.
    """
    augment = Augment(**{k: v for k, v in options.items() if v is not None})
    if not augment.enabled():
        return None
    augment.kind = kind
    if (augment.hflip or augment.vflip) and is_digit_dataset(dataset):
        warnings.warn(f"flips are enabled on the digit data set {dataset!r}: a flip can change the class, as "
                      "'b' and 'd' or '6' and '9' show; consider crop_padding, translate or a small "
                      "rotation instead", UserWarning, stacklevel=2)
    return augment



#: Every option with its default; all defaults mean "off".
OPTIONS = Augment.__init__.options
DEFAULTS: dict[str, object] = {o.name: o.default for o in OPTIONS}


def describe() -> str:
    """The augmentation options as text."""
    return describe_table(OPTIONS, "augment")
