"""Models from the user's own code: ``[model] name = "package.module:factory"`` or ``"path/to/file.py:factory"``.

A factory is a function or an ``nn.Module`` class that returns the network. descend calls it with the rest of the
``[model]`` table as keyword arguments, and with the sizes the data gives, each passed only where the factory has
a parameter of that name (or ``**kwargs``):

- ``input_shape``: the shape of one sample, no batch dimension (a tuple: ``(40,)`` for MNIST-1D, ``(1, 28, 28)``);
- ``in_features``: the product of ``input_shape`` (what a first ``nn.Linear`` takes after ``nn.Flatten``);
- ``num_outputs``: the outputs the loss needs (classes for cross-entropy, 1 for binary or scalar regression);
- ``num_classes``: the number of classes (classification only).

:func:`create` is the one place a recipe's model is built, for descend's own networks and the user's alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from descend import usercode
from descend.errors import UserError
from descend.models import networks


def is_user(name: Any) -> bool:
    """Whether the recipe's ``model.name`` names the user's code rather than one of descend's networks."""
    return isinstance(name, str) and name not in networks.BUILDERS and usercode.is_reference(name)


def sizes(input_shape: Sequence[int], num_outputs: int, num_classes: int | None = None) -> dict[str, Any]:
    """The keyword values descend offers a factory for data of these sizes."""
    shape = tuple(int(n) for n in input_shape)
    given = {"input_shape": shape, "in_features": math.prod(shape), "num_outputs": int(num_outputs)}
    return given | ({"num_classes": int(num_classes)} if num_classes else {})


def check(name: str, options: Mapping[str, Any]) -> None:
    """Import the factory ``name`` and check the recipe's ``options`` against its signature, nothing built: an
    unknown argument, or a required one that neither the recipe nor the data gives, is one UserError."""
    factory = usercode.load(name, what="model.name")
    usercode.call_kwargs(factory, options, dict.fromkeys(("input_shape", "in_features", "num_outputs", "num_classes")),
                         what=f"model factory {name!r}")


def create(name: str, input_shape: Sequence[int], num_outputs: int, options: Mapping[str, Any] | None = None, *,
           num_classes: int | None = None, factory: Callable | None = None) -> nn.Module:
    """The network a recipe's ``[model]`` describes: descend's ``mlp`` / ``cnn1d`` / ``cnn2d``
    (:func:`descend.models.build`), or the user's factory that ``name`` references (imported; or ``factory``, the
    object itself, which then is not imported) called with ``options`` and the data's sizes."""
    options = dict(options or {})
    if factory is None and not is_user(name):
        return networks.build(name, input_shape, num_outputs, **options)
    if isinstance(factory, nn.Module):
        raise UserError(f"model: got a built {type(factory).__name__}; pass its factory (a function or class that "
                        "returns the network), so each fit, fold and member starts from fresh weights")
    if factory is None:
        factory = usercode.load(name, what="model.name")
    what = f"model factory {name!r}"
    kwargs = usercode.call_kwargs(factory, options, sizes(input_shape, num_outputs, num_classes), what=what)
    try:
        model = factory(**kwargs)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{what} failed{usercode.where_it_failed(e)}: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise UserError(f"{what} returned a {type(model).__name__}; a model factory returns a torch.nn.Module")
    return model
