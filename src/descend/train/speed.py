"""Speed options that change how a fit runs, never what it computes: channels-last memory and torch.compile.

- ``channels_last``: 2-D convolutions stored and run in NHWC order (``torch.channels_last``), the layout the
  convolution kernels of oneDNN (CPU) and cuDNN (tensor cores) are fastest in. The model's 4-D parameters and the
  training and evaluation inputs are converted once, before the first step; every convolution then produces NHWC
  outputs. ``channels_last = "auto"`` (the default, :mod:`descend.train.hardware`) turns it on for 2-D
  convolutional models on images; an explicit ``true`` on inputs that are not images is refused, so a recipe does
  not silently ask for nothing.
- ``compile``: the training forward pass goes through ``torch.compile`` (TorchDynamo captures it, Inductor
  generates fused kernels: C++/OpenMP on the CPU, Triton on CUDA). The compiled module shares the model's
  parameters, so optimizer, checkpoints and evaluation see one model. The first steps pay for compilation (tens of
  seconds on a CPU, and once more when the data's last batch is smaller), so it pays only on long runs;
  ``benchmarks.speed`` measures when. Evaluation stays eager: a second graph for eval mode would cost another
  compilation for a pass that is a small part of an epoch.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..data import Split
from ..errors import UserError


def channels_last(model: nn.Module, split: Split) -> Split:
    """Put ``model``'s 4-D parameters and buffers, and ``split``'s inputs, in channels-last order."""
    if split.x.dim() != 4:
        raise UserError(f"channels_last is for 2-D convolutional models on image batches (N, C, H, W); these "
                        f"inputs have per-sample shape {tuple(split.x.shape[1:])}: set channels_last = false")
    model.to(memory_format=torch.channels_last)
    return replace(split, x=split.x.contiguous(memory_format=torch.channels_last))


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, imported only when asked for (importing the compiler costs seconds)."""
    try:
        return torch.compile(model)
    except RuntimeError as e:  # e.g. a Python version or platform torch.compile does not support
        raise UserError(f"torch.compile is not available here ({str(e).splitlines()[0]}); set compile = false") from e
