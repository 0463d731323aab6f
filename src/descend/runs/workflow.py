"""Every workflow from Python, with your own model and data in place of the recipe's sections.

:func:`run` trains a recipe into the run directory ``descend run`` writes; :func:`recipe` is the recipe it trains,
and the other workflows (:func:`descend.tune.search`, :func:`descend.tune.cross_validate`,
:func:`descend.lab.compare.compare_recipe`, :func:`descend.doctor.examine`) take the same ``model=`` and ``data=``::

    import descend as ds
    summary = ds.run("recipe.toml", out="runs/mine", model=mynets.resnet1d, data=(x, y))
    ds.load_run(summary["run_dir"], model=mynets.resnet1d).predict(x_new)

``model`` is a factory (a function or an ``nn.Module`` class; a ``functools.partial`` carries its arguments) that
descend calls with the data's sizes (:mod:`descend.models.user`); ``data`` is what a data loader returns — ``(x, y)``
arrays, a ``torch.utils.data.Dataset``, or named splits ``{"train": (x, y), "val": ..., "test": ...}`` — or the
loader itself (:mod:`descend.data.user`). The recipe records them by reference (:func:`descend.usercode.name_of`): a
function of an importable module or file is recorded as ``module:name`` or ``/path/file.py:name`` and loads again
anywhere (``--allow-code``); one defined in a script, a notebook or a lambda, and data given as arrays, are
recorded as ``__main__:name`` and load only in this process, so such a run is loaded by passing the same objects
again (``load_run(path, model=factory)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from .. import config as cfg
from .. import usercode
from ..errors import UserError
from . import execute

#: The ``[data]`` fields that describe splitting and scaling, kept when ``data=`` replaces the dataset.
DATA_FIELDS = ("val_fraction", "test_fraction", "scale", "target_scale", "task")


def recipe(source: str | Path | Mapping | cfg.Config | None = None, *, model: Any = None, data: Any = None,
           overrides: list[str] | tuple[str, ...] = ()) -> cfg.Config:
    """The recipe ``source`` (a TOML path, a dict, a :class:`~descend.config.Config`, or None for the defaults),
    with ``model`` replacing its ``[model]`` section, ``data`` its dataset (the splitting and scaling fields stay)
    and the ``overrides`` (``"optimizer.lr=3e-3"``) applied last; checked like any recipe."""
    if isinstance(source, (str, Path)):
        raw = cfg.load(source).model_dump(exclude_none=True)
    elif isinstance(source, cfg.Config):
        raw = source.model_dump(exclude_none=True)
    elif isinstance(source, Mapping) or source is None:
        raw = dict(source or {})
    else:
        raise UserError(f"recipe must be a path, a dict or a descend.config.Config, got {type(source).__name__}")
    if model is not None:
        raw["model"] = model_section(model)
    if data is not None:
        kept = {k: v for k, v in (raw.get("data") or {}).items() if k in DATA_FIELDS}
        raw["data"] = {**kept, "name": data_name(data)}
    for item in overrides:
        cfg.apply_override(raw, item)
    raw.setdefault("name", Path(source).stem if isinstance(source, (str, Path)) else "python")
    return cfg.validate(raw, source=str(source) if isinstance(source, (str, Path)) else "recipe")


def model_section(model: Any) -> dict:
    """The ``[model]`` section for ``model``: a factory (function or ``nn.Module`` class), a ``functools.partial`` of
    one (its keywords become the section's arguments), or a name (``"mlp"``, ``"pkg.mod:factory"``)."""
    if isinstance(model, str):
        return {"name": model}
    if isinstance(model, nn.Module):
        raise UserError(f"model= got a built {type(model).__name__}; pass its factory (a function or class that "
                        "returns the network), so each fit, fold and member starts from fresh weights")
    if isinstance(model, functools.partial) and not model.args:
        return {"name": usercode.name_of(model.func), **model.keywords}
    if not callable(model):
        raise UserError(f"model= must be a factory (a function or nn.Module class), got {type(model).__name__}")
    return {"name": usercode.name_of(model)}


def data_name(data: Any) -> str:
    """The ``[data] name`` for ``data``: a dataset name or file path as it is, a loader function by reference,
    anything else (arrays, a Dataset, named splits) as a loader that returns it, in this process."""
    if isinstance(data, (str, Path)):
        return str(data)
    if callable(data) and not hasattr(data, "__getitem__"):
        return usercode.name_of(data)
    return usercode.given(functools.partial(_same, data), "data")


def _same(value: Any) -> Any:
    return value


def run(source: str | Path | Mapping | cfg.Config | None = None, out: str | Path | None = None, *,
        model: Callable | None = None, data: Any = None, overrides: list[str] | tuple[str, ...] = (),
        resume: bool = False, quiet: bool = False) -> dict:
    """Train a recipe into a run directory, as ``descend run`` does, and return its summary (``final`` metrics,
    ``run_dir``, ...). ``model`` and ``data`` replace the recipe's sections (see :func:`recipe`); ``out`` defaults
    to ``runs/<name>-<timestamp>``; ``quiet`` turns off the model summary and progress."""
    return execute.run(recipe(source, model=model, data=data, overrides=overrides), out, resume=resume,
                       quiet=quiet)
