"""Experiment recipes: TOML validated by pydantic, with ``--set a.b=value`` overrides.

Every config error comes from here as one :class:`~descend.errors.UserError` naming the field path, the bad value
and what is allowed. Sections whose options belong to a part of descend (``[optimizer]``, ``[schedule]``,
``[regularization]``, ``[augment]``, ``[model]``, ``[data]``) accept that part's options and are checked by the part
itself, so each option is described in exactly one place. Configs are data: no eval, no imports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import tomli_w
import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import optim, regularization, schedules
from .data import augment
from .errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @property
    def options(self) -> dict[str, Any]:
        """The section's extra options (those the part, not this schema, knows), as keyword arguments."""
        return dict(self.model_extra or {})


class _OpenSection(_Section):
    """A section whose extra fields are options of a descend part, checked by that part itself."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)


class DataConfig(_OpenSection):
    name: str = Field(description="built-in dataset name, or a path to a .csv / .npz / .idx file")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    scale: Literal["standardize", "minmax", "none"] = "standardize"
    target: str | int | None = None
    features: list[str | int] | None = None
    task: Literal["classification", "regression"] | None = None


class ModelConfig(_OpenSection):
    name: Literal["mlp", "cnn1d", "cnn2d"] = "mlp"


class TrainConfig(_Section):
    epochs: int = Field(10, ge=1)
    batch_size: int | Literal["full"] = 128
    shuffle: bool = True
    drop_last: bool = False
    loss: Literal["cross_entropy", "binary_cross_entropy", "mse", "mae"] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: list[float] | None = None
    metrics: list[str] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    precision: Literal["fp32", "bf16"] = "fp32"
    deterministic: bool = False
    clip_grad_norm: float | None = Field(None, gt=0.0)
    clip_grad_value: float | None = Field(None, gt=0.0)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    checkpoint_unit: Literal["epoch", "step"] = "epoch"
    on_divergence: Literal["stop", "rollback"] = "stop"
    max_rollbacks: int = Field(3, ge=0)

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError('must be a positive integer or "full"')
        return v


class _PartSection(_OpenSection):
    """A section that builds one part of descend (its ``build()``); it is valid when the part accepts it."""

    @model_validator(mode="after")
    def _check(self):
        try:
            self.build()
        except UserError as e:
            raise ValueError(str(e)) from None
        return self


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
    def build(self, dataset: str | None = None):
        """The augmentation; ``dataset`` lets it warn about flips on digit data."""
        return augment.create(dataset=dataset, **self.options)


class EarlyStoppingConfig(_Section):
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int = Field(10, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    start_from_epoch: int = Field(0, ge=0)
    restore_best: bool = True


class Config(_Section):
    name: str | None = None
    seed: int = 0
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig | None = None
    regularization: RegularizationConfig | None = None
    augment: AugmentConfig | None = None
    early_stopping: EarlyStoppingConfig | None = None


# ---------------------------------------------------------------------------------------------- loading
def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a TOML recipe, apply ``a.b=value`` overrides, validate. Errors are UserErrors naming the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"recipe file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read recipe {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML: {e}") from None
    _resolve_paths(raw, path.parent)
    for item in overrides:
        apply_override(raw, item)
    _resolve_paths(raw, Path.cwd())
    raw.setdefault("name", path.stem)
    return validate(raw, source=str(path))


def _resolve_paths(raw: dict, folder: Path) -> None:
    """Relative data file paths (``data.name``, ``data.labels``) as absolute ones, against ``folder``: the recipe's
    own folder for what the recipe says, the working directory for ``--set`` values."""
    from .data.files import file_kind

    data = raw.get("data")
    if not isinstance(data, dict):
        return
    for key in ("name", "labels"):
        value = data.get(key)
        if isinstance(value, str) and file_kind(value) is not None and not Path(value).expanduser().is_absolute():
            data[key] = str((folder / value).resolve())


def validate(raw: dict, source: str = "config") -> Config:
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
        value = tomllib.loads(f"v = {text}")["v"]
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
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-after", "literal"))]
    # unions report each member's path (int / literal["full"]); keep the field path only
    loc = [part for part in loc if part not in ("int", "float", "str", "bool", "list[union[str,int]]")]
    field = ".".join(loc) or "config"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_fields(loc[:-1]))
        return f"unknown field {field!r}; allowed here: {allowed}"
    if error["type"] == "missing":
        return f"missing required field {field!r}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        return f"[{field}] {message}"
    return f"{field} = {error.get('input')!r}: {message}"


def _fields(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in loc:
        annotation = model.model_fields[part].annotation
        model = next(a for a in (getattr(annotation, "__args__", None) or (annotation,))
                     if isinstance(a, type) and issubclass(a, BaseModel))
    return list(model.model_fields)


def dump(config: Config) -> str:
    """The resolved recipe as TOML (defaults filled in), for a run's ``config.toml``; short lists on one line."""
    text = tomli_w.dumps(config.model_dump(exclude_none=True))
    return re.sub(r"\[\n((?:    [^\n\[\]{}]*,\n)+)\]", _one_line, text)


def _one_line(match: re.Match) -> str:
    line = "[" + ", ".join(item.strip().removesuffix(",") for item in match.group(1).splitlines()) + "]"
    return line if len(line) <= 80 else match.group(0)
