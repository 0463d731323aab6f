"""Models: ``mlp``, ``cnn1d``, ``cnn2d`` builders, the user's own factories (:mod:`descend.models.user`), the
activations (with :class:`Maxout`) and weight init; :func:`create` builds a recipe's model, whichever it is.

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
from descend.models.user import create

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
    "create",
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
