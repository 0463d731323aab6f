"""Experiment recipes: TOML validated by pydantic, with ``--set a.b=value`` overrides; the sections are
:mod:`descend.config.sections`.

Every config error comes from here as one :class:`~descend.errors.UserError` naming the field path, the bad value
and what is allowed. Sections whose options belong to a part of descend (``[optimizer]``, ``[schedule]``,
``[regularization]``, ``[augment]``, ``[model]``, ``[data]``) accept that part's options and are checked by the part
itself, so each option is described in exactly one place. Configs are data: no eval, no imports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomli_w
import tomllib
from pydantic import BaseModel, ValidationError

from ..data.files import file_kind
from ..errors import UserError, short
from .sections import (
    RENAMED,
    AugmentConfig,
    AveragingConfig,
    Config,
    DataConfig,
    EarlyStoppingConfig,
    EnsembleConfig,
    ModelConfig,
    OptimizerConfig,
    RegularizationConfig,
    ScheduleConfig,
    TrackingConfig,
    TrainConfig,
    TransferConfig,
    renamed_warning,
)

__all__ = ["AugmentConfig", "AveragingConfig", "Config", "DataConfig", "EarlyStoppingConfig", "EnsembleConfig",
           "ModelConfig", "OptimizerConfig", "RegularizationConfig", "ScheduleConfig", "TrackingConfig",
           "TrainConfig", "TransferConfig", "apply_override", "describe", "dump", "load", "settle_words", "validate"]


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
    settle_words(node, ".".join(parents), leaf)


def settle_words(node: dict, section: str, leaf: str) -> None:
    """After ``leaf`` was set in the raw ``section`` (an override, a searched value): where the section now holds an
    old word and its new one (``kind`` and ``name``), the one just set wins; an old word kept is read with its
    warning when the recipe is validated."""
    for old, new in RENAMED.get(section, {}).items():
        if old in node and new in node:
            if leaf == new:
                renamed_warning(section, old, new, node.pop(old))
            elif leaf == old:
                del node[new]


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
