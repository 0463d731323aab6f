"""The model builders: ``mlp``, ``cnn1d``, ``cnn2d``, and ``build(name, ...)`` for configs.

Every builder stacks the same block (:mod:`descend.models.blocks`: Linear/Conv → batch norm → activation
→ [pooling] → dropout), ends in a plain ``Linear`` that produces ``num_outputs`` logits, and initializes all
weights by one scheme (:mod:`descend.models.init`). Given ``input_shape`` (one sample, no batch dimension)
and ``num_outputs`` it returns the ``torch.nn.Module``; without them it returns a :class:`ModelSpec` that the
trainer builds once it knows the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from descend.errors import UserError
from descend.memory import check_fits_memory
from descend.models.blocks import BLOCK_OPTIONS, BlockOptions, block
from descend.models.init import initialize
from descend.options import ListOf, OneOf, Option, Optional, declare, integer, validate
from descend.options import describe as describe_table

#: float32 weight, gradient and two optimizer moments (Adam's m and v): what training holds per parameter
BYTES_PER_PARAMETER = 16
POOLS = ("none", "max", "avg")
HEADS = ("flatten", "avg", "max")
_WIDTHS = ListOf(integer(1))
#: The sizes the data gives; a builder called without them returns a :class:`ModelSpec`.
SIZES = (
    Option("input_shape", Optional(ListOf(integer(1), min_length=1), "none (from the data)"),
           doc="the shape of one sample, no batch dimension"),
    Option("num_outputs", Optional(integer(1), "none (from the data)"), doc="outputs of the last Linear"),
)
_CNN = (
    Option("channels", ListOf(integer(1), min_length=1), doc="output channels of each conv block"),
    *SIZES,
    Option("kernel_size", integer(1), doc="kernel size of every conv (padding 'same')"),
    Option("pool", OneOf(*POOLS), doc="pooling after each conv block"),
    Option("pool_size", integer(1), doc="pooling window and stride"),
    Option("pool_every", integer(1), doc="pool after every k-th conv block (2: conv-conv-pool stages, as VGG)"),
    Option("head", OneOf(*HEADS), doc="flatten keeps positions; avg / max pool globally"),
    Option("head_hidden", _WIDTHS, doc="widths of Linear blocks between the conv blocks and the output"),
    *BLOCK_OPTIONS,
)
_NAME = Option("name", OneOf("mlp", "cnn1d", "cnn2d"))


@dataclass
class ModelSpec:
    """A model whose sizes come later: ``spec.build(input_shape, num_outputs)`` returns the module.

    ``name`` is the builder (``"mlp"``, ``"cnn1d"``, ``"cnn2d"``) and ``options`` its keyword arguments (all
    of them, defaults included, JSON-able), so ``descend.models.build(spec.name, shape, n, **spec.options)``
    makes the same architecture. A size already given to the builder is kept and must agree with the one
    given here.
    """

    name: str
    options: dict[str, Any]
    input_shape: tuple[int, ...] | None = field(default=None)
    num_outputs: int | None = field(default=None)

    def build(self, input_shape: Sequence[int] | None = None, num_outputs: int | None = None) -> nn.Module:
        shape = _fixed("input_shape", self.input_shape, None if input_shape is None else tuple(input_shape))
        outputs = _fixed("num_outputs", self.num_outputs, num_outputs)
        return BUILDERS[self.name](**self.options, input_shape=shape, num_outputs=outputs)


def _fixed(name: str, kept: Any, given: Any) -> Any:
    if kept is not None and given is not None and kept != given:
        raise UserError(f"{name} was fixed at {kept!r} when the model was specified; the data gives "
                        f"{given!r}")
    value = given if given is not None else kept
    if value is None:
        raise UserError(f"{name} is needed to build the model")
    return value


def _shape(name: str, shape: Sequence[int], ranks: tuple[int, ...] | None = None) -> tuple[int, ...]:
    if ranks is not None and len(shape) not in ranks:
        allowed = " or ".join(f"{r} sizes" for r in ranks)
        raise UserError(f"input_shape for {name} must have {allowed} (one sample, no batch), "
                        f"got {tuple(shape)}")
    return tuple(shape)


def _finish(name: str, local: dict[str, Any], make: Callable[[tuple[int, ...], int], list[nn.Module]],
            opts: BlockOptions) -> nn.Module | ModelSpec:
    """Return the initialized module when both sizes are known, else the :class:`ModelSpec`."""
    input_shape, num_outputs = local.pop("input_shape"), local.pop("num_outputs")
    if input_shape is not None:
        input_shape = tuple(input_shape)
    if input_shape is None or num_outputs is None:
        return ModelSpec(name, local, input_shape, num_outputs)
    with torch.device("meta"):  # shapes only, no memory: the size is known before anything is allocated
        planned = count_parameters(nn.Sequential(*make(tuple(input_shape), num_outputs)))
    check_fits_memory(f"model {name!r} with {planned:,} parameters (weights, gradients and up to two optimizer "
                      f"moments: {BYTES_PER_PARAMETER} bytes each)", planned * BYTES_PER_PARAMETER,
                      "use fewer or narrower layers, or pooling before a flatten head")
    model = nn.Sequential(*make(tuple(input_shape), num_outputs))
    return initialize(model, opts.init, activation=opts.activation, std=opts.init_std,
                      negative_slope=opts.negative_slope)


@declare("model 'mlp'", Option("hidden", _WIDTHS, doc="width of each hidden block; [] is a linear model"),
         *SIZES, *BLOCK_OPTIONS)
def mlp(hidden: Sequence[int] = (128,), *, input_shape: Sequence[int] | None = None,
        num_outputs: int | None = None, activation: str = "relu", batch_norm: bool = False,
        dropout: float | Sequence[float] = 0.0, init: str = "he_uniform", init_std: float = 0.01,
        maxout_k: int = 2, negative_slope: float = 0.01,
        batch_norm_momentum: float | None = 0.1) -> nn.Module | ModelSpec:
    """A fully connected network: Flatten → one block per width in ``hidden`` → Linear(num_outputs).

    A sample of any shape is flattened to ``d = prod(input_shape)`` features. Each hidden block is
    Linear → [BatchNorm1d] → activation → [Dropout]; ``hidden=[]`` gives a linear model (logistic regression).
    ``activation`` ∈ sigmoid, tanh, relu, leaky_relu (slope ``negative_slope``), elu, gelu, maxout
    (``maxout_k`` pieces); ``init`` ∈ xavier_uniform, xavier_normal, he_uniform, he_normal, normal
    (σ = ``init_std``; see :mod:`descend.models.init` for the formulas and He's fan_in mode and gains).
    """
    local = dict(locals())
    opts = BlockOptions(activation, batch_norm, dropout, init, init_std, maxout_k, negative_slope,
                        batch_norm_momentum)
    dropouts = opts.dropouts(len(hidden))
    if input_shape is not None:
        _shape("mlp", input_shape)

    def make(shape: tuple[int, ...], n_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Flatten()]
        n_in = math.prod(shape)
        for width, p in zip(hidden, dropouts):
            layers += block(nn.Linear, n_in, width, opts, dropout=p)
            n_in = width
        return [*layers, nn.Linear(n_in, n_out)]

    return _finish("mlp", local, make, opts)


def _cnn(name: str, dims: int, local: dict[str, Any]) -> nn.Module | ModelSpec:
    """The shared body of :func:`cnn1d` and :func:`cnn2d` (``dims`` spatial dimensions)."""
    channels, kernel_size, pool, pool_size, pool_every, head, head_hidden = (
        local[k] for k in ("channels", "kernel_size", "pool", "pool_size", "pool_every", "head", "head_hidden"))
    opts = BlockOptions(*(local[k] for k in ("activation", "batch_norm", "dropout", "init", "init_std",
                                              "maxout_k", "negative_slope", "batch_norm_momentum")))
    dropouts = opts.dropouts(len(channels) + len(head_hidden))
    if local["input_shape"] is not None:
        _shape(name, local["input_shape"], (dims, dims + 1))
    conv = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
    pool_layer = {"max": {1: nn.MaxPool1d, 2: nn.MaxPool2d}, "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d}}
    global_pool = {"avg": {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d},
                   "max": {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d}}

    def make(shape: tuple[int, ...], n_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = []
        if len(shape) == dims:  # no channel dimension: add one
            layers.append(nn.Unflatten(1, (1, shape[0])))
            shape = (1, *shape)
        n_in, spatial = shape[0], list(shape[1:])
        for i, (width, p) in enumerate(zip(channels, dropouts)):
            pooling = None
            if pool != "none" and (i + 1) % pool_every == 0:
                spatial = [s // pool_size for s in spatial]
                if min(spatial) < 1:
                    raise UserError(f"pool_size {pool_size} after {len(channels)} blocks shrinks "
                                    f"input {shape[1:]} below one element; use fewer blocks, a smaller "
                                    "pool_size or pool='none'")
                pooling = pool_layer[pool][dims](pool_size)
            layers += block(conv, n_in, width, opts, dropout=p, pool=pooling, kernel_size=kernel_size,
                            padding="same")
            n_in = width
        if head == "flatten":
            n_in *= math.prod(spatial)
        else:
            layers.append(global_pool[head][dims](1))
        layers.append(nn.Flatten())
        for width, p in zip(head_hidden, dropouts[len(channels):]):
            layers += block(nn.Linear, n_in, width, opts, dropout=p)
            n_in = width
        return [*layers, nn.Linear(n_in, n_out)]

    return _finish(name, local, make, opts)


@declare("model 'cnn1d'", *_CNN)
def cnn1d(channels: Sequence[int] = (32, 32, 32, 32, 32), *, input_shape: Sequence[int] | None = None,
          num_outputs: int | None = None, kernel_size: int = 5, pool: str = "none", pool_size: int = 2,
          pool_every: int = 1, head: str = "flatten", head_hidden: Sequence[int] = (), activation: str = "relu",
          batch_norm: bool = False, dropout: float | Sequence[float] = 0.0, init: str = "he_uniform",
          init_std: float = 0.01, maxout_k: int = 2, negative_slope: float = 0.01,
          batch_norm_momentum: float | None = 0.1) -> nn.Module | ModelSpec:
    """A 1-D convolutional network for signals: a sample is ``(L,)`` (one channel added) or ``(C, L)``.

    One block per entry of ``channels``: Conv1d(kernel_size, padding="same", so the length is kept) →
    [BatchNorm1d] → activation → [pool ∈ none, max, avg of ``pool_size``] → [Dropout]. Then the head:
    ``flatten`` (keeps where each feature is; the best for short signals such as MNIST-1D), ``avg`` or ``max``
    (global pooling over the length), then one Linear block per ``head_hidden`` width, then
    Linear(num_outputs).
    The other options are those of :func:`mlp`.

    The defaults (five 32-channel blocks, kernel 5, no pooling, flatten head) come from MNIST-1D: with
    ``batch_norm=True``, AdamW (lr 2e-2, weight decay 0.05), batch 128 and a 20% linear warmup then cosine
    decay, this model reaches 98–99% test accuracy in 8 epochs (``python -m benchmarks.models_mnist1d``).
    Depth matters more than width there: the receptive field of n blocks is 4n + 1 samples, and two 64-channel
    blocks (9 samples) stop near 92.5%, three near 97%.
    """
    return _cnn("cnn1d", 1, dict(locals()))


@declare("model 'cnn2d'", *_CNN)
def cnn2d(channels: Sequence[int] = (32, 64), *, input_shape: Sequence[int] | None = None,
          num_outputs: int | None = None, kernel_size: int = 3, pool: str = "max", pool_size: int = 2,
          pool_every: int = 1, head: str = "flatten", head_hidden: Sequence[int] = (), activation: str = "relu",
          batch_norm: bool = False, dropout: float | Sequence[float] = 0.0, init: str = "he_uniform",
          init_std: float = 0.01, maxout_k: int = 2, negative_slope: float = 0.01,
          batch_norm_momentum: float | None = 0.1) -> nn.Module | ModelSpec:
    """A 2-D convolutional network for images: a sample is ``(H, W)`` (one channel added) or ``(C, H, W)``.

    One block per entry of ``channels``: Conv2d(kernel_size, padding="same") → [BatchNorm2d] → activation →
    [pool ∈ none, max, avg of ``pool_size`` × ``pool_size``; max by default, halving H and W; after every
    ``pool_every``-th block, so ``channels=[32, 32, 64, 64], pool_every=2`` makes the conv-conv-pool stages of
    Simonyan & Zisserman's VGG] →
    [Dropout]; then the head as in :func:`cnn1d` and Linear(num_outputs).
    """
    return _cnn("cnn2d", 2, dict(locals()))


BUILDERS: dict[str, Callable[..., nn.Module | ModelSpec]] = {"mlp": mlp, "cnn1d": cnn1d, "cnn2d": cnn2d}


def table(name: str) -> tuple[Option, ...]:
    """The options builder ``name`` takes from a recipe (all but the sizes, which the data gives)."""
    sizes = {o.name for o in SIZES}
    return tuple(o for o in BUILDERS[_NAME.check("model", name)].options if o.name not in sizes)


def options(name: str) -> tuple[str, ...]:
    """The option names builder ``name`` accepts (besides ``input_shape`` and ``num_outputs``)."""
    return tuple(o.name for o in table(name))


def spec(name: str, **opts: Any) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` with ``opts``, every option checked, nothing built (the recipe path)."""
    options = validate(f"model {name!r}", table(name), opts)
    return BUILDERS[name](**options)


def build(name: str, input_shape: Sequence[int], num_outputs: int, **opts: Any) -> nn.Module:
    """Build model ``name`` ∈ mlp, cnn1d, cnn2d with ``opts`` (the config path); unknown names are errors."""
    if input_shape is None or num_outputs is None:
        raise UserError("build needs both input_shape and num_outputs")
    return spec(name, **opts).build(input_shape, num_outputs)


def describe() -> str:
    """Every model builder's options as text."""
    return "\n".join(describe_table(table(name), f"model {name!r}") for name in BUILDERS)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of scalar parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
