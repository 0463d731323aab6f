"""A recipe's sections: each one a part's declared options, or the options a part checks itself.

``[train]``, ``[early_stopping]``, ``[tracking]`` and the top level (``name``, ``seed``) are option tables
(:mod:`descend.options`): the Trainer's own options (:class:`~descend.train.Trainer`), the checkpoint policy's,
``Trainer.fit``'s and the loss's, each declared once and checked by its :class:`~descend.options.Option`; so are
``[data]``'s splitting and scaling options (:func:`descend.data.load`'s). The other sections build one part of
descend (``[optimizer]``, ``[schedule]``, ``[regularization]``, ``[augment]``, ``[averaging]``, ``[ensemble]``,
``[transfer]``, ``[model]``, the dataset's own options in ``[data]``) and are valid when the part accepts their
options. Every section that picks an implementation does it with ``name``; the older words (``[regularization]
kind``, ``[averaging] method``) are read as ``name`` with one warning (:data:`RENAMED`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from .. import averaging, ensemble, models, optim, regularization, schedules, tracking, transfer
from .. import data as datasets
from ..data import augment
from ..errors import UserError, short
from ..options import Boolean, Either, ListOf, OneOf, Option, Optional, Text, integer, number
from ..train import Trainer
from ..train.callbacks import EarlyStopping
from ..train.checkpointing import Checkpoints
from ..train.checks import DEVICES
from ..train.epochs import MAX_EPOCHS
from ..train.metrics import LOSSES


def _default(function: Callable, name: str) -> Any:
    """The default of parameter ``name`` of ``function``: the part's signature is the one source."""
    return inspect.signature(function).parameters[name].default


def renamed_warning(section: str, old: str, new: str, value: Any) -> None:
    """The one warning for an old word of a section: it still works, and says what to write instead."""
    warnings.warn(
        f"[{section}] {old} is the old word for {new}: write {new} = {short(value)} instead (every "
        f"section picks its implementation with {new})",
        FutureWarning,
        stacklevel=4,
    )


class _Section(BaseModel):
    # strict: TOML is typed, so '1' where a number belongs, or 'yes' where a boolean does, is a mistake (--set
    # values are read as TOML too, so `--set train.epochs=3` still gives an integer)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)
    #: older words for this section's fields (old -> new), read with a warning
    renamed: ClassVar[dict[str, str]] = {}
    #: the declared options among the section's fields, each value checked by its option (the others: by pydantic)
    table: ClassVar[tuple[Option, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _check_option(cls, value: Any, info) -> Any:
        option = next((o for o in cls.table if o.name == info.field_name), None)
        if option is None:
            return value
        ok, converted = option.constraint.check(value)
        if not ok:
            raise ValueError(f"must be {option.allowed()}")
        return converted

    @model_validator(mode="before")
    @classmethod
    def _new_words(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not any(old in raw for old in cls.renamed):
            return raw
        raw = dict(raw)
        for old, new in cls.renamed.items():
            if old in raw:
                if new in raw:
                    raise ValueError(f"{old} is the old word for {new}: give {new} alone")
                renamed_warning(section_of(cls), old, new, raw[old])
                raw[new] = raw.pop(old)
        return raw

    @property
    def options(self) -> dict[str, Any]:
        """The section's extra options (those the part, not this schema, knows), as keyword arguments."""
        return dict(self.model_extra or {})


class _OpenSection(_Section):
    """A section whose extra fields are options of a descend part, checked by that part itself."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, strict=True)


class _PartSection(_OpenSection):
    """A section that builds one part of descend (its ``build()``); it is valid when the part accepts it."""

    @model_validator(mode="after")
    def _check(self):
        try:
            self.build()
        except UserError as e:
            raise ValueError(str(e)) from None
        return self


class _TableSection(_Section):
    """A section whose fields are an option table: the table's defaults, each value checked by its option."""


def table_section(
    name: str,
    table: tuple[Option, ...],
    doc: str,
    base: type[_Section] = _TableSection,
    first: dict[str, Any] | None = None,
    **fields: Any,
) -> type[_Section]:
    """A section class whose fields are ``table``'s options with their defaults, between the pydantic fields
    ``first`` and ``fields``."""
    declared: dict[str, Any] = {o.name: (Any, o.check(name, o.default)) for o in table}
    section = create_model(name, __base__=base, __doc__=doc, **(first or {}), **declared, **fields)
    section.table = table
    return section


_Data = table_section(
    "_Data",
    tuple(o for o in datasets.load.options if o.name != "seed"),  # the recipe's top-level seed
    "",
    _PartSection,
    first={
        "name": (
            str,
            Field(
                description="built-in dataset name, a path to a .csv / .npz / .idx file, or your own "
                "loader: 'package.module:loader' or 'path/to/file.py:loader' (descend.data.user)"
            ),
        )
    },
    target=(str | int | None, None),
    features=(list[str | int] | None, None),
)


class DataConfig(_Data):
    """``[data]``: ``name``, :func:`descend.data.load`'s options, a CSV file's columns, the dataset's own options."""

    def build(self):
        """The dataset's own options, checked against its table (nothing is read or generated)."""
        return datasets.check_options(self.name, **self.options)


class ModelConfig(_PartSection):
    name: str = Field(
        "mlp",
        description="mlp, cnn1d, cnn2d, or your own factory: 'package.module:factory' or "
        "'path/to/file.py:factory' (descend.models.user)",
    )

    def build(self):
        """A model spec (:func:`descend.models.spec`): every option checked, nothing built. A factory of the user's
        code is checked for form here, and imported and checked against its signature when the model is built
        (:func:`descend.models.create`): a run directory's recipe is read without importing anything."""
        if models.user.is_user(self.name):
            return self.name
        if self.name not in models.BUILDERS:
            raise UserError(
                f"name = {short(self.name)}: must be one of {', '.join(models.BUILDERS)}, or your own "
                "factory as 'package.module:factory' or 'path/to/file.py:factory'"
            )
        return models.spec(self.name, **self.options)


MAX_METRICS = 64  # each is computed every epoch; more than a few dozen is a mistake
#: ``[train]`` options that are not the Trainer's: ``Trainer.fit``'s (how long, on what batches), the loss, the
#: metrics and the device.
RECIPE_OPTIONS = (
    Option("epochs", integer(1, MAX_EPOCHS), _default(Trainer.fit, "epochs"), "passes over the training data"),
    Option(
        "batch_size",
        Either(OneOf("full"), integer(1)),
        _default(Trainer.fit, "batch_size"),
        "samples per step; full: gradient descent, 1: stochastic gradient descent",
    ),
    Option("shuffle", Boolean(), _default(Trainer.fit, "shuffle"), "a new order of the training data every epoch"),
    Option("drop_last", Boolean(), _default(Trainer.fit, "drop_last"), "leave out the last, smaller batch"),
    Option(
        "loss",
        Optional(OneOf(*LOSSES), "none (cross_entropy for classification, mse for regression)"),
        _default(Trainer, "loss"),
        "the training loss",
    ),
    Option("label_smoothing", number(0, 1, closed="left"), 0.0, "cross entropy against smoothed targets"),
    Option("class_weights", Optional(ListOf(number())), None, "one weight per class in the loss"),
    Option(
        "metrics",
        ListOf(Text("a metric name"), max_length=MAX_METRICS),
        [],
        "logged besides the loss: accuracy, f1, auroc, r2, …",
    ),
    Option("device", OneOf(*DEVICES), _default(Trainer, "device"), "auto: CUDA, then MPS, then the CPU"),
)
#: ``[train]`` options of the Trainer itself (its declared table; the seed is the recipe's top-level ``seed``).
TRAINER_OPTIONS = tuple(o for o in Trainer.__init__.options if o.name != "seed")
#: ``[train] checkpoint_*``: the checkpoint policy's options (:class:`~descend.train.checkpointing.Checkpoints`).
CHECKPOINT_OPTIONS = tuple(
    replace(o, name=f"checkpoint_{o.name}") for o in Checkpoints.__init__.options if o.name in ("every", "unit")
)

_Train = table_section("_Train", RECIPE_OPTIONS + TRAINER_OPTIONS + CHECKPOINT_OPTIONS, "")


class TrainConfig(_Train):
    """``[train]``: ``Trainer.fit``'s, the loss's, ``Trainer``'s and ``Checkpoints``' options; defaults are theirs."""

    def fit_options(self) -> dict[str, Any]:
        """``Trainer.fit``'s keyword arguments."""
        return {name: getattr(self, name) for name in ("epochs", "batch_size", "shuffle", "drop_last")}

    def trainer_options(self) -> dict[str, Any]:
        """The Trainer's own options, as keyword arguments of :class:`~descend.train.Trainer`."""
        return {o.name: getattr(self, o.name) for o in TRAINER_OPTIONS}


class OptimizerConfig(_PartSection):
    name: str = "adam"

    def build(self):
        """An optimizer spec (:func:`descend.optim.create` without parameters)."""
        return optim.create(self.name, **self.options)


class ScheduleConfig(_PartSection):
    name: str = "constant"

    def build(self):
        return schedules.create(self.name, **self.options)


class RegularizationConfig(_PartSection):
    renamed: ClassVar[dict[str, str]] = {"kind": "name"}
    name: str

    def build(self):
        return regularization.create(self.name, **self.options)


class AugmentConfig(_PartSection):
    def build(self, dataset: str | None = None, kind: str | None = None):
        """The augmentation; ``dataset`` lets it warn about flips on digit data, ``kind`` refuse them on tables."""
        return augment.create(dataset=dataset, kind=kind, **self.options)


class AveragingConfig(_PartSection):
    renamed: ClassVar[dict[str, str]] = {"method": "name"}
    name: str = "ema"

    def build(self):
        """The weight-averaging callback (:func:`descend.averaging.create`)."""
        return averaging.create(self.name, **self.options)


class EnsembleConfig(_PartSection):
    def build(self):
        """What kind of ensemble, of what size (:func:`descend.ensemble.create`)."""
        return ensemble.create(**self.options)


class TransferConfig(_PartSection):
    def build(self):
        """The transfer: pretrained weights, mode, learning-rate scale (:func:`descend.transfer.create`)."""
        return transfer.create(**self.options)


#: ``[early_stopping]``: :class:`~descend.train.callbacks.EarlyStopping`'s options, defaults and checks.
EarlyStoppingConfig = table_section(
    "EarlyStoppingConfig", EarlyStopping.__init__.options, "``[early_stopping]``: the options of EarlyStopping."
)
#: ``[tracking]``: where runs are logged besides their run directory (:mod:`descend.tracking`).
TrackingConfig = table_section("TrackingConfig", tracking.OPTIONS, "``[tracking]``: the MLflow store of the runs.")


#: The recipe's top level: the run's name, and the seed of everything random (the Trainer's ``seed``).
TOP_OPTIONS = (
    Option(
        "name",
        Optional(
            Text("a plain name: 1 to 200 characters, no slash or backslash, no control characters", max_length=200),
            "none (the recipe file's name)",
        ),
        None,
        "names the run's directory: runs/NAME-DATE-TIME",
    ),
    next(o for o in Trainer.__init__.options if o.name == "seed"),
)


class Config(_Section):
    table: ClassVar[tuple[Option, ...]] = TOP_OPTIONS
    name: str | None = None  # names the run's directory (runs/<name>-<time>), so it is a plain file name

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if v is not None and (
            not v.strip()
            or len(v) > 200
            or v in (".", "..")
            or any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in v)
        ):
            raise ValueError(
                "must be a plain name for the run's directory: 1 to 200 characters, no '/' or '\\', "
                "no control characters, not '.' or '..'"
            )
        return v

    seed: int = TOP_OPTIONS[1].default
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig | None = None
    regularization: RegularizationConfig | None = None
    augment: AugmentConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None
    averaging: AveragingConfig | None = None
    ensemble: EnsembleConfig | None = None
    transfer: TransferConfig | None = None
    tracking: TrackingConfig | None = None


def section_class(field: str) -> type[BaseModel]:
    """The class of a recipe section, by its name."""
    annotation = Config.model_fields[field].annotation
    return next(a for a in (getattr(annotation, "__args__", None) or (annotation,)) if isinstance(a, type))


def section_of(cls: type[BaseModel]) -> str:
    """The recipe section a section class is read from."""
    return next(name for name in Config.model_fields if section_class(name) is cls)


#: Each section's older words for its fields (old -> new), read with a warning.
RENAMED = {
    name: section_class(name).renamed
    for name in Config.model_fields
    if isinstance(section_class(name), type)
    and issubclass(section_class(name), _Section)
    and section_class(name).renamed
}
