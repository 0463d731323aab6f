"""The constraints of the option vocabulary: what values an option allows, as data.

Each constraint checks a value without coercing it (``'0'`` is not a number, ``True`` is not a number, ``2.0``
is not an integer, NaN and infinity are in no interval), returns it in canonical form (an ``int``, a ``float``,
a fresh ``list``), says what it allows in words that complete "must be …", and offers a value of the wrong type
and one out of range for the generated contract tests. The model is scikit-learn's ``_param_validation``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any


class _Refused(Exception):
    """Raised by a constraint's ``_convert`` for a value it does not allow."""



# ---------------------------------------------------------------------------------------------- constraints


class Constraint:
    """What values an option allows. ``allowed()`` says it in words that complete "must be …"."""

    def check(self, value: Any) -> tuple[bool, Any]:
        """``(True, the value in canonical form)`` if allowed, else ``(False, None)``."""
        try:
            return True, self._convert(value)
        except _Refused:
            return False, None

    def _convert(self, value: Any) -> Any:
        raise NotImplementedError

    def allowed(self) -> str:
        raise NotImplementedError

    def wrong_type(self) -> Any:
        """A value of the wrong type (the contract test feeds it to every option)."""
        return "text"

    def out_of_range(self) -> Any | None:
        """A value of the right type outside the allowed range, or None where there is no range."""
        return None


@dataclass(frozen=True)
class Interval(Constraint):
    """A finite number (``kind=float``) or an integer (``kind=int``) between ``low`` and ``high``.

    ``closed`` says which ends belong to the interval: ``"both"``, ``"left"``, ``"right"`` or ``"neither"``;
    an end given as None is unbounded.
    """

    kind: type = float
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def _convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, Integral if self.kind is int else Real):
            raise _Refused
        if not math.isfinite(value) or not self._inside(value):
            raise _Refused
        return self.kind(value)

    def _inside(self, value: float) -> bool:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and (value < self.low or (value == self.low and not left)):
            return False
        return self.high is None or not (value > self.high or (value == self.high and not right))

    def allowed(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        return f"{what} {self.bounds()}".rstrip()

    def bounds(self) -> str:
        left, right = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"in {'[' if left else '('}{self.low:g}, {self.high:g}{']' if right else ')'}"
        if self.low is not None:
            return f"{'>=' if left else '>'} {self.low:g}"
        if self.high is not None:
            return f"{'<=' if right else '<'} {self.high:g}"
        return ""

    def wrong_type(self) -> Any:
        return "1"

    def out_of_range(self) -> Any | None:
        if self.low is not None:
            return self.kind(self.low - 1)
        return None if self.high is None else self.kind(self.high + 1)


def number(low: float | None = None, high: float | None = None, closed: str = "both") -> Interval:
    """A finite real number in the interval (see :class:`Interval`)."""
    return Interval(float, low, high, closed)


def integer(low: int | None = None, high: int | None = None) -> Interval:
    """An integer in ``[low, high]``."""
    return Interval(int, low, high)


@dataclass(frozen=True)
class Boolean(Constraint):
    def _convert(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _Refused
        return value

    def allowed(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class OneOf(Constraint):
    """One of a few strings."""

    choices: tuple[str, ...]

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def _convert(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.choices:
            raise _Refused
        return value

    def allowed(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def wrong_type(self) -> Any:
        return 3

    def out_of_range(self) -> Any | None:
        return "unknown"


@dataclass(frozen=True)
class Text(Constraint):
    """A non-empty string (a metric name, a path), at most ``max_length`` characters; with ``paths`` a
    ``pathlib.Path`` is taken as its string."""

    what: str = "a non-empty string"
    max_length: int | None = None
    paths: bool = False

    def _convert(self, value: Any) -> Any:
        if self.paths and isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value or (self.max_length and len(value) > self.max_length):
            raise _Refused
        return value

    def allowed(self) -> str:
        return self.what

    def wrong_type(self) -> Any:
        return 3


@dataclass(frozen=True)
class Patterns(Constraint):
    """Parameter-name patterns (fnmatch); one string is a list of one."""

    def _convert(self, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise _Refused
        return list(value)

    def allowed(self) -> str:
        return "a list of parameter-name patterns (fnmatch, '<normalization>' for norm layers)"

    def wrong_type(self) -> Any:
        return 3


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list whose every item meets ``item``; ``length`` fixes its length, ``max_length`` bounds it (a list whose
    length multiplies work or memory), ``increasing`` asks a < b < …"""

    item: Constraint
    min_length: int = 0
    length: int | None = None
    increasing: bool = False
    max_length: int | None = None

    def _convert(self, value: Any) -> Any:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _Refused
        if len(value) < self.min_length or (self.length is not None and len(value) != self.length):
            raise _Refused
        if self.max_length is not None and len(value) > self.max_length:
            raise _Refused
        out = []
        for v in value:
            ok, converted = self.item.check(v)
            if not ok:
                raise _Refused
            out.append(converted)
        if self.increasing and any(b <= a for a, b in zip(out, out[1:], strict=False)):
            raise _Refused
        return out

    def allowed(self) -> str:
        item = self.item.allowed().removeprefix("an ").removeprefix("a ")
        plural = item + "s" if isinstance(self.item, Text) else item.replace("integer", "integers", 1).replace(
            "number", "numbers", 1)
        size = f"{self.length} " if self.length else ""
        nonempty = "non-empty " if self.min_length and not self.length else ""
        most = f" (at most {self.max_length})" if self.max_length is not None else ""
        return f"a {nonempty}list of {size}{plural}{most}" + (", strictly increasing" if self.increasing else "")

    def wrong_type(self) -> Any:
        return "text"

    def out_of_range(self) -> Any | None:
        bad = self.item.out_of_range()
        if bad is None:
            return None
        return [bad] * (self.length or max(1, self.min_length))


@dataclass(frozen=True)
class Either(Constraint):
    """Any value one of ``members`` allows (the first that does converts it)."""

    members: tuple[Constraint, ...]

    def __init__(self, *members: Constraint) -> None:
        object.__setattr__(self, "members", tuple(members))

    def _convert(self, value: Any) -> Any:
        for member in self.members:
            ok, converted = member.check(value)
            if ok:
                return converted
        raise _Refused

    def allowed(self) -> str:
        return " or ".join(m.allowed() for m in self.members)

    def wrong_type(self) -> Any:
        return {}

    def out_of_range(self) -> Any | None:
        for member in self.members:
            bad = member.out_of_range()
            if bad is not None and not self.check(bad)[0]:
                return bad
        return None


@dataclass(frozen=True)
class Optional(Constraint):
    """None (TOML: leave it out) or a value ``inner`` allows; ``none`` says what None means."""

    inner: Constraint
    none: str = "none"

    def _convert(self, value: Any) -> Any:
        if value is None:
            return None
        ok, converted = self.inner.check(value)
        if not ok:
            raise _Refused
        return converted

    def allowed(self) -> str:
        return f"{self.inner.allowed()} or {self.none}"

    def wrong_type(self) -> Any:
        return self.inner.wrong_type()

    def out_of_range(self) -> Any | None:
        return self.inner.out_of_range()
