"""Models: ``mlp``, ``cnn1d``, ``cnn2d`` builders, the activations (with :class:`Maxout`) and weight init.

Each block is Linear/Conv → batch norm → activation → [pooling] → dropout; the last layer is a plain Linear
that produces ``num_outputs`` logits. See :mod:`descend.models.networks` for the builders.
"""

from __future__ import annotations

from descend.models.activations import ACTIVATIONS, Maxout, make_activation
from descend.models.init import INITS, he_gain, initialize
from descend.models.networks import (
    BUILDERS,
    HEADS,
    ModelSpec,
    build,
    cnn1d,
    cnn2d,
    count_parameters,
    describe,
    mlp,
    options,
    spec,
    table,
)
from descend.models.summary import ModelSummary, summary

__all__ = [
    "ACTIVATIONS",
    "BUILDERS",
    "HEADS",
    "INITS",
    "Maxout",
    "ModelSpec",
    "build",
    "cnn1d",
    "cnn2d",
    "count_parameters",
    "describe",
    "he_gain",
    "initialize",
    "make_activation",
    "mlp",
    "options",
    "spec",
    "table",
    "summary",
    "ModelSummary",
]
