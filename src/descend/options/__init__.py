"""The option vocabulary every part of descend declares its options in: constraints as data, one message.

A part (an optimizer, a schedule, a regularizer, the augmentation, a model builder, a dataset) lists its
options as a table of :class:`Option` s, each with a constraint (:mod:`descend.options.constraints`), a default and one
line of documentation. :func:`validate` checks what the user gave against the table, fills in the defaults
and refuses anything else with one message template::

    <where>: option '<name>' must be <what is allowed>; got <value>.
    <where>: unknown option '<name>'; valid options: <names>.

The model is scikit-learn's ``utils/_param_validation.py`` (``Interval(Real, 0, 1, closed="left")``).
Nothing is coerced: ``'0'`` is not a number, ``True`` is not a number, ``2.0`` is not an integer, NaN and
infinity are in no interval. :func:`declare` attaches a table to a function whose signature holds the
defaults, so a default is written once; :func:`describe` renders a table as text, :func:`markdown` as Markdown.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from descend.errors import UserError, short
from descend.options.constraints import (
    Boolean,
    Constraint,
    Either,
    Interval,
    ListOf,
    OneOf,
    Optional,
    Patterns,
    Text,
    integer,
    number,
)

__all__ = ["REQUIRED", "Boolean", "Constraint", "Either", "Interval", "ListOf", "OneOf", "Option", "Optional",
           "Patterns", "Text", "declare", "describe", "integer", "markdown", "number", "refusal", "validate"]


class _Required:
    def __repr__(self) -> str:
        return "required"


#: The default of an option the user must give.
REQUIRED: Any = _Required()


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Option:
    """One option of a part: its name, what it allows, its default (or :data:`REQUIRED`), what it means."""

    name: str
    constraint: Constraint
    default: Any = REQUIRED
    doc: str = ""

    def check(self, where: str, value: Any) -> Any:
        """``value`` in canonical form, or the one :class:`UserError` naming where, option, allowed and value."""
        ok, converted = self.constraint.check(value)
        if not ok:
            raise UserError(refusal(where, self.name, self.constraint.allowed(), value))
        return converted

    def allowed(self) -> str:
        return self.constraint.allowed()


def refusal(where: str, name: str, allowed: str, value: Any) -> str:
    """The message template: "<where>: option '<name>' must be <allowed>; got <value!r>." (a long value cut short)."""
    return f"{where}: option {name!r} must be {allowed}; got {short(value)}."


Table = Sequence[Option]


def validate(where: str, table: Table, given: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``table``: the given value checked and in canonical form, else the default.

    A name not in the table, a missing required option, or a value its constraint refuses is a
    :class:`UserError` naming ``where``, the option, what is allowed and the value.
    """
    options = {o.name: o for o in table}
    unknown = [name for name in given if name not in options]
    if unknown:
        valid = ", ".join(options) or "none"
        raise UserError(f"{where}: unknown option {short(unknown[0])}; valid options: {valid}.")
    checked = {name: options[name].check(where, value) for name, value in given.items()}
    missing = [o for o in table if o.name not in given and o.default is REQUIRED]
    if missing:
        raise UserError(f"{where}: option {missing[0].name!r} is required: give {missing[0].allowed()}.")
    # defaults go through the constraint too: the same canonical form, and lists are fresh copies
    return {o.name: checked[o.name] if o.name in given else o.check(where, o.default) for o in table}


def declare(where: str, *table: Option) -> Callable[[Callable], Callable]:
    """Attach ``table`` to a function: every call is validated, and the defaults are the signature's.

    Options without a default in the table take the function's; the decorated function gets ``.options``
    (the completed table) and ``.where``. Arguments not in the table pass through unchecked.
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)
        parameters = signature.parameters
        missing = [o.name for o in table if o.name not in parameters]
        if missing:
            raise TypeError(f"{function.__qualname__} has no parameter {missing[0]!r}")
        completed = tuple(
            replace(o, default=_default(parameters[o.name].default)) if o.default is REQUIRED else o for o in table
        )
        names = {o.name for o in completed}
        keywords = [p for p in parameters.values() if p.kind is not p.VAR_KEYWORD]

        @functools.wraps(function)
        def checked(*args: Any, **kwargs: Any) -> Any:
            known = {p.name for p in keywords}
            unknown = [k for k in kwargs if k not in known]
            if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                valid = ", ".join(o.name for o in completed)
                raise UserError(f"{where}: unknown option {short(unknown[0])}; valid options: {valid}.")
            bound = signature.bind(*args, **kwargs)
            given = {k: v for k, v in bound.arguments.items() if k in names}
            bound.arguments.update(validate(where, completed, given))
            return function(*bound.args, **bound.kwargs)

        checked.options = completed  # type: ignore[attr-defined]
        checked.where = where  # type: ignore[attr-defined]
        return checked

    return decorate


def _default(value: Any) -> Any:
    return REQUIRED if value is inspect.Parameter.empty else value


# ---------------------------------------------------------------------------------------------- rendering


def describe(table: Table, title: str = "") -> str:
    """The table as text: one line per option with its default, what it allows and what it means."""
    lines = [f"{title}:"] if title else []
    indent = "  " if title else ""
    for o in table:
        lines.append(f"{indent}{o.name:<20} default {_show(o.default):<24} {o.allowed()}" + (f"  — {o.doc}"
                                                                                             if o.doc else ""))
    return "\n".join(lines)


def markdown(tables: Iterable[tuple[str, Table]]) -> str:
    """Markdown: one sub-table per ``(title, table)``, columns option | default | allowed | meaning."""
    out = []
    for title, table in tables:
        out += [f"**{title}**", "", "| option | default | allowed | meaning |", "|---|---|---|---|"]
        for o in table:
            cells = (f"`{o.name}`", f"`{_show(o.default)}`", o.allowed(), o.doc)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _show(default: Any) -> str:
    if default is REQUIRED:
        return "required"
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in default) + "]"
    if isinstance(default, str):
        return f'"{default}"'
    return f"{default:g}" if isinstance(default, float) else str(default)

