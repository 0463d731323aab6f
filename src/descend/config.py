"""Experiment recipes: TOML validated by pydantic, with ``--set a.b=value`` overrides.

Every config error comes from here as one :class:`~descend.errors.UserError` naming the field path, the bad value
and what is allowed. Sections whose options belong to a part of descend (``[optimizer]``, ``[schedule]``,
``[regularization]``, ``[augment]``, ``[model]``, ``[data]``) accept that part's options and are checked by the part
itself, so each option is described in exactly one place. Configs are data: no eval, no imports.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomli_w
import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from . import averaging, ensemble, models, optim, regularization, schedules, transfer
from . import data as datasets
from .data import augment
from .data.files import file_kind
from .errors import UserError, short
from .options import Option
from .options import validate as validate_options
from .train import Trainer
from .train.callbacks import EarlyStopping
from .train.checkpointing import Checkpoints
from .train.epochs import MAX_EPOCHS


class _Section(BaseModel):
    # strict: TOML is typed, so '1' where a number belongs, or 'yes' where a boolean does, is a mistake (--set
    # values are read as TOML too, so `--set train.epochs=3` still gives an integer)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

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


def _default(function: Callable, name: str) -> Any:
    """The default of parameter ``name`` of ``function``: the part's signature is the one source."""
    return inspect.signature(function).parameters[name].default


class DataConfig(_PartSection):
    name: str = Field(description="built-in dataset name, a path to a .csv / .npz / .idx file, or your own loader: "
                      "'package.module:loader' or 'path/to/file.py:loader' (descend.data.user)")
    val_fraction: float = Field(_default(datasets.load, "val_fraction"), ge=0.0, lt=1.0)
    test_fraction: float | None = Field(_default(datasets.load, "test_fraction"), gt=0.0, lt=1.0)
    scale: Literal["standardize", "minmax", "none"] = _default(datasets.load, "scale")
    target_scale: Literal["standardize", "none"] = _default(datasets.load, "target_scale")
    missing: Literal["impute", "refuse"] = _default(datasets.load, "missing")
    target: str | int | None = None
    features: list[str | int] | None = None
    task: Literal["classification", "regression"] | None = None

    def build(self):
        """The dataset's own options, checked against its table (nothing is read or generated)."""
        return datasets.check_options(self.name, **self.options)


class ModelConfig(_PartSection):
    name: str = Field("mlp", description="mlp, cnn1d, cnn2d, or your own factory: 'package.module:factory' or "
                      "'path/to/file.py:factory' (descend.models.user)")

    def build(self):
        """A model spec (:func:`descend.models.spec`): every option checked, nothing built. A factory of the user's
        code is checked for form here, and imported and checked against its signature when the model is built
        (:func:`descend.models.create`): a run directory's recipe is read without importing anything."""
        if models.user.is_user(self.name):
            return self.name
        if self.name not in models.BUILDERS:
            raise UserError(f"name = {short(self.name)}: must be one of {', '.join(models.BUILDERS)}, or your own "
                            "factory as 'package.module:factory' or 'path/to/file.py:factory'")
        return models.spec(self.name, **self.options)


class TrainConfig(_Section):
    """``Trainer.fit``'s, ``Trainer``'s and ``Checkpoints``' arguments; their defaults are theirs."""

    epochs: int = Field(_default(Trainer.fit, "epochs"), ge=1, le=MAX_EPOCHS)
    batch_size: int | Literal["full"] = _default(Trainer.fit, "batch_size")
    shuffle: bool = _default(Trainer.fit, "shuffle")
    drop_last: bool = _default(Trainer.fit, "drop_last")
    loss: Literal["cross_entropy", "binary_cross_entropy", "mse", "mae"] | None = _default(Trainer, "loss")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: list[float] | None = None
    metrics: list[str] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda", "mps"] = _default(Trainer, "device")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _default(Trainer, "precision")
    threads: int | Literal["auto"] = _default(Trainer, "threads")
    channels_last: bool | Literal["auto"] = _default(Trainer, "channels_last")
    compile: bool = _default(Trainer, "compile")
    deterministic: bool = _default(Trainer, "deterministic")
    clip_grad_norm: float | None = Field(_default(Trainer, "clip_grad_norm"), gt=0.0)
    clip_grad_value: float | None = Field(_default(Trainer, "clip_grad_value"), gt=0.0)
    log_every: int = Field(_default(Trainer, "log_every"), ge=1)
    checkpoint_every: int = Field(_default(Checkpoints, "every"), ge=1)
    checkpoint_unit: Literal["epoch", "step"] = _default(Checkpoints, "unit")
    on_divergence: Literal["stop", "rollback"] = _default(Trainer, "on_divergence")
    max_rollbacks: int = Field(_default(Trainer, "max_rollbacks"), ge=0)

    @field_validator("batch_size", "threads")
    @classmethod
    def _positive_or_word(cls, v, info):
        """A number of samples or threads is at least 1; the field's word ("full", "auto") is the other choice."""
        if isinstance(v, int) and v < 1:
            word = {"batch_size": "full", "threads": "auto"}[info.field_name]
            raise ValueError(f'must be a positive integer or "{word}"')
        return v


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
    kind: str

    def build(self):
        return regularization.create(self.kind, **self.options)


class AugmentConfig(_PartSection):
    def build(self, dataset: str | None = None, kind: str | None = None):
        """The augmentation; ``dataset`` lets it warn about flips on digit data, ``kind`` refuse them on tables."""
        return augment.create(dataset=dataset, kind=kind, **self.options)


class AveragingConfig(_PartSection):
    method: str = "ema"

    def build(self):
        """The weight-averaging callback (:func:`descend.averaging.create`)."""
        return averaging.create(self.method, **self.options)


class EnsembleConfig(_PartSection):
    def build(self):
        """What kind of ensemble, of what size (:func:`descend.ensemble.create`)."""
        return ensemble.create(**self.options)


class TransferConfig(_PartSection):
    def build(self):
        """The transfer: pretrained weights, mode, learning-rate scale (:func:`descend.transfer.create`)."""
        return transfer.create(**self.options)


class _TableSection(_Section):
    """A section whose fields are one part's option table: the table's defaults, checked by the table."""

    where: ClassVar[str]
    table: ClassVar[tuple[Option, ...]]

    @model_validator(mode="before")
    @classmethod
    def _check(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        known = {k: v for k, v in raw.items() if k in cls.model_fields}  # unknown names: pydantic's message
        try:
            return {**raw, **validate_options(cls.where, cls.table, known)}
        except UserError as e:
            raise ValueError(str(e)) from None


def _table_section(name: str, where: str, table: tuple[Option, ...]) -> type[_TableSection]:
    fields: dict[str, Any] = {o.name: (Any, o.default) for o in table}
    section = create_model(name, __base__=_TableSection, **fields)
    section.where, section.table = where, table
    return section


#: ``[early_stopping]``: :class:`~descend.train.callbacks.EarlyStopping`'s options, defaults and checks.
EarlyStoppingConfig = _table_section("EarlyStoppingConfig", "EarlyStopping", EarlyStopping.__init__.options)


class TrackingConfig(_Section):
    """``[tracking]``: where runs are logged besides their run directory (:mod:`descend.tracking`)."""

    mlflow: str | None = Field(None, description="an MLflow tracking URI: sqlite:///mlruns.db, file:./mlruns, "
                               "or a server's http(s)://host:port")
    experiment: str | None = Field(None, description="the MLflow experiment (default: the recipe's name)")


class Config(_Section):
    name: str | None = None  # names the run's directory (runs/<name>-<time>), so it is a plain file name

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v):
        if v is not None and (not v.strip() or len(v) > 200 or v in (".", "..") or
                              any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in v)):
            raise ValueError("must be a plain name for the run's directory: 1 to 200 characters, no '/' or '\\', "
                             "no control characters, not '.' or '..'")
        return v
    seed: int = Field(0, ge=0)
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


# ---------------------------------------------------------------------------------------------- loading
MAX_RECIPE_BYTES = 16 << 20


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a TOML recipe, apply ``a.b=value`` overrides, validate. Errors are UserErrors naming the field."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:  # before reading: a recipe is kilobytes
            raise UserError(f"recipe {path} has {path.stat().st_size:,} bytes; a recipe holds at most "
                            f"{MAX_RECIPE_BYTES:,}: is it the right file?")
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"recipe file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read recipe {path}: {e}") from None
    try:
        raw = _toml(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None
    resolve_paths(raw, path.parent)
    for item in overrides:
        apply_override(raw, item)
    resolve_paths(raw, Path.cwd())
    raw.setdefault("name", path.stem)
    return validate(raw, source=str(path))


def resolve_paths(raw: dict, folder: Path) -> None:
    """Relative data file paths (``data.name``, ``data.labels``) and code files (``model.name`` or ``data.name`` of
    the form ``file.py:name``) as absolute ones, against ``folder``: the recipe's own folder for what the recipe
    says, the working directory for ``--set`` values."""
    for section in ("model", "data"):  # the user's code by file ("file.py:factory"), read from the recipe's folder
        table = raw.get(section)
        if isinstance(table, dict) and isinstance(table.get("name"), str) and ".py:" in table["name"]:
            where, _, name = table["name"].rpartition(":")
            if not Path(where).expanduser().is_absolute():
                table["name"] = f"{(folder / where).resolve()}:{name}"
    data = raw.get("data")
    if not isinstance(data, dict):
        return
    loader = data.get("name")
    if isinstance(loader, str) and file_kind(loader) is None and ".py:" in loader:
        where, _, name = loader.rpartition(":")  # the user's data loader file, read from the recipe's folder
        if not Path(where).expanduser().is_absolute():
            data["name"] = f"{(folder / where).resolve()}:{name}"
    for key in ("name", "labels"):
        value = data.get(key)
        if isinstance(value, str) and file_kind(value) is not None and not Path(value).expanduser().is_absolute():
            try:
                data[key] = str((folder / value).resolve())
            except (OSError, ValueError) as e:  # a NUL byte, a loop of links: the system refuses the path
                raise UserError(f"data.{key}: cannot use the path {short(value)}: {e}") from None


#: How deep a recipe's values may nest: a section, a list of lists, a table of options (a few levels at most).
MAX_DEPTH = 8


def _toml(text: str) -> dict:
    """TOML text as a dict; nesting deep enough to exhaust the parser's recursion is a TOMLDecodeError."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError(f"values nest too deeply (a recipe nests at most {MAX_DEPTH} levels)") from None


def _out_of_bounds(value: Any, path: str, depth: int = 0) -> str | None:
    """Why the first value that no recipe field holds is refused, with its path, or None: nested deeper than
    :data:`MAX_DEPTH` levels, or an integer beyond TOML's 64 bits (Python's parser reads any size)."""
    if depth > MAX_DEPTH:
        return f"{path.lstrip('.')} nests deeper than {MAX_DEPTH} levels; no recipe field does"
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return f"{path.lstrip('.')} = {short(value, 40)} is beyond TOML's 64-bit integers; no recipe field needs it"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _out_of_bounds(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", depth + 1)
        if found:
            return found
    return None


def validate(raw: dict, source: str = "config") -> Config:
    refused = _out_of_bounds(raw, "") if isinstance(raw, dict) else None
    if refused:
        raise UserError(f"{source}: {refused}")
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{source}: {describe(e.errors()[0])}") from None


def apply_override(raw: dict, item: str) -> None:
    """``a.b=value``: the value is read as TOML (numbers, booleans, lists, quoted strings), else as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set expects section.field=value, got {item!r}")
    try:
        value = _toml(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *parents, leaf = [part.strip() for part in key.split(".")]
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def describe(error: dict) -> str:
    """One line for one pydantic error: field path, bad value, what is allowed."""
    loc = _path(error["loc"])
    field = ".".join(loc) or "config"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_fields(loc[:-1]))
        return f"unknown field {short(field)}; allowed here: {allowed}"
    if error["type"] == "missing":
        return f"missing required field {field!r}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        return f"[{field}] {message}"
    return f"{field} = {short(error.get('input'))}: {message}"


def _path(loc: tuple) -> list[str]:
    """The field path of a pydantic error location, walking the schema: inside a section every part is a
    field name; inside a value only list positions count (the rest name union members or validators)."""
    model: type[BaseModel] | None = Config
    path = []
    for part in loc:
        if model is not None:
            path.append(str(part))
            field = model.model_fields.get(str(part))
            model = _section(field.annotation) if field else None
        elif isinstance(part, int):
            path.append(str(part))
    return path


def _section(annotation: Any) -> type[BaseModel] | None:
    """The section model an annotation holds (``X`` or ``X | None``), or None for a plain value."""
    for a in getattr(annotation, "__args__", None) or (annotation,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _fields(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        model = _section(model.model_fields[part].annotation)
    return list(model.model_fields)


def dump(config: Config) -> str:
    """The resolved recipe as TOML (defaults filled in), for a run's ``config.toml``; short lists on one line."""
    text = tomli_w.dumps(config.model_dump(exclude_none=True))
    return re.sub(r"\[\n((?:    [^\n\[\]{}]*,\n)+)\]", _one_line, text)


def _one_line(match: re.Match) -> str:
    line = "[" + ", ".join(item.strip().removesuffix(",") for item in match.group(1).splitlines()) + "]"
    return line if len(line) <= 80 else match.group(0)
