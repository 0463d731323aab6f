"""Ensembles of predictions. For now: Monte-Carlo dropout, "dropout is a kind of ensemble" (lectures 02, 04).

Training with dropout trains one network of a different structure per mini-batch, with shared weights
(lecture 04). Keeping dropout on at prediction time and averaging N stochastic passes averages N members of
that implicit ensemble::

    p̂(y | x) = 1/N Σ_{n=1..N} softmax(f(x; W ⊙ r_n)),   r_n ~ Bernoulli masks

The usual prediction (eval mode) replaces the average by one pass with the expected activations instead.
"""

from __future__ import annotations

import torch
from torch import nn

from descend.errors import UserError
from descend.options import OneOf, Option, declare, integer

__all__ = ["mc_dropout", "DROPOUT_LAYERS"]

#: torch's dropout layers: Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout.
DROPOUT_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)


@declare("mc_dropout", Option("samples", integer(1), doc="stochastic forward passes averaged"),
         Option("output", OneOf("probabilities", "raw"), doc="average softmax(logits), or the raw outputs"))
def mc_dropout(model: nn.Module, x: torch.Tensor, samples: int = 20,
               output: str = "probabilities") -> torch.Tensor:
    """Mean of ``samples`` stochastic forward passes of ``model`` on ``x``.

    Dropout layers run in train mode (a fresh mask per pass, from torch's global generator); every other
    module (batch norm in particular) runs in eval mode, so batch norm uses its running averages and does not
    update them. Runs under ``torch.inference_mode``; every module's train/eval mode is restored afterwards.

    ``output="probabilities"`` (default, for classifiers) averages softmax(logits) over dim 1, the class axis;
    ``output="raw"`` averages the model's outputs as they are (regression, or models that end in a softmax).
    """
    modes = {module: module.training for module in model.modules()}
    dropouts = [module for module in modes if isinstance(module, DROPOUT_LAYERS)]
    if not dropouts:
        raise UserError("mc_dropout needs a model with dropout layers (nn.Dropout…); this model has none")
    try:
        model.eval()
        for module in dropouts:
            module.train()
        with torch.inference_mode():
            total = None
            for _ in range(samples):
                out = model(x)
                if output == "probabilities":
                    out = out.softmax(dim=1)
                total = out.clone() if total is None else total.add_(out)  # never write into the output
            return total.div_(samples)
    finally:
        for module, training in modes.items():
            module.training = training
