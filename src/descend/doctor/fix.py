"""``--fix``: apply the findings' recipe changes to the raw recipe and check the result like any recipe.

Changes are dotted paths (``optimizer.lr``, ``model.activation``) or whole sections (``early_stopping``); a value
of None removes the field. Only error-level findings are applied unless asked otherwise (Karpathy's recipe: change
one thing at a time; warnings stay advice). Findings are applied in rank order and the first to set a path wins,
so the most severe finding's remedy is the one kept. The new recipe is validated by :func:`descend.config.validate`, so
every part re-checks its options.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import tomli_w
import tomllib

from .. import atomic, models
from .. import config as cfg
from .findings import Finding

_MISSING = object()


def apply(raw: dict, findings: list[Finding], severities: tuple[str, ...] = ("error",)) -> tuple[dict, list[str]]:
    """The recipe with the fixes of the ``severities`` findings applied, and one line per change
    ("path: old -> new (finding)"). Warnings are left as advice by default: change few things at a time. A model
    factory of the user's code keeps its own arguments: a change to ``model.*`` (descend's networks' options) is
    listed as advice for that code, not written."""
    new, changed, taken = copy.deepcopy(raw), [], set()
    own_model = models.user.is_user((raw.get("model") or {}).get("name"))
    for finding in findings:
        if finding.fix is None or finding.severity not in severities:
            continue
        for path, value in finding.fix.changes.items():
            if path in taken or any(path.startswith(t + ".") or t.startswith(path + ".") for t in taken):
                continue
            if own_model and path.startswith("model."):
                changed.append(f"{path}: not applied, model.name is your own factory: make the change in its "
                               f"code ({finding.id}: {value!r})")
                taken.add(path)
                continue
            old = _get(new, path)
            if old is not _MISSING and old == value:
                continue
            _set(new, path, value)
            taken.add(path)
            shown = "(unset)" if old is _MISSING else repr(old)
            changed.append(f"{path}: {shown} -> {value!r} ({finding.id})")
    cfg.validate(new, source="the fixed recipe")
    return new, changed


def read_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """The recipe as its author wrote it (plus ``--set`` overrides), so the fixed file stays as short."""
    raw = tomllib.loads(Path(path).read_text())
    cfg.resolve_paths(raw, Path(path).parent)  # the fixed file may be written elsewhere (--out): paths absolute
    for item in overrides:
        cfg.apply_override(raw, item)
    return raw


def write(raw: dict, path: str | Path) -> Path:
    path = Path(path)
    atomic.write_text(path, tomli_w.dumps(_without_none(raw)), what="fixed recipe")  # whole, never through a link
    return path


def fixed_path(recipe: str | Path, out: str | Path | None = None) -> Path:
    """``RECIPE.fixed.toml`` next to the recipe, or in ``out`` when given."""
    recipe = Path(recipe)
    name = f"{recipe.stem}.fixed.toml"
    return Path(out) / name if out is not None else recipe.with_name(name)


def _get(tree: dict, path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set(tree: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(leaf, None)
    else:
        node[leaf] = copy.deepcopy(value)


def _without_none(tree: dict) -> dict:
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in tree.items() if v is not None}
