"""Markdown tables of typed or plain dict rows, as the study's report writes them: numbers by format spec, a mean
followed by its bootstrap interval, a paired difference marked when not significant, and missing values as —."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

NOT_SIGNIFICANT = "n.s."
MISSING = "—"
_FILL_ALIGN_SIGN = re.compile(r"^((?:.?[<>=^])?[+\- ]?)")


def finite_number(value: object) -> float | None:
    """`value` as a finite float, or None when missing, NaN, infinite or not a number."""
    if value is None or isinstance(value, str | bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


Key = str | Callable[[Any], object]  # a dict row's key, or what reads the value off a typed row


class Column(NamedTuple):
    """A markdown column: a title, what it shows of a row (a dict row's key, or a function of a typed row), a format
    spec (None for text), and the same for its bootstrap interval's ends when the value is followed by that interval."""

    title: str
    key: Key
    spec: str | None
    interval: tuple[Key, Key] | None = None


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap interval, shown as `0.0523 [0.0491, 0.0557]`."""

    value: object
    low: object
    high: object

    def text(self, spec: str) -> str:
        value, low, high = (finite_number(x) for x in (self.value, self.low, self.high))
        if value is None:
            return MISSING
        if low is None or high is None:
            return number(value, spec)
        return f"{number(value, spec)} [{number(low, spec)}, {number(high, spec)}]"


@dataclass(frozen=True)
class Difference(Interval):
    """A paired difference of means with its interval, marked "n.s." when the interval contains 0."""

    def text(self, spec: str) -> str:
        text = super().text(spec)
        low, high = finite_number(self.low), finite_number(self.high)
        significant = low is None or high is None or not low <= 0 <= high
        return text if significant else f"{text} {NOT_SIGNIFICANT}"


def fmt(value: object, spec: str | None) -> str:
    """A number (or an Interval) formatted by `spec`, or text when `spec` is None; "—" when missing."""
    if isinstance(value, Interval):
        return value.text(spec)
    if spec is None:
        return text(value)
    x = finite_number(value)
    return MISSING if x is None else number(x, spec)


def number(x: float, spec: str) -> str:
    """`x` formatted by the float format spec `spec`, without a minus on a value that rounds to zero: a difference of
    -0.00003 shows as +0.0000 or 0.0000, never -0.0000 (format's `z` option, placed after fill, align and sign)."""
    return format(x, _FILL_ALIGN_SIGN.sub(r"\1z", spec, count=1))


def text(value: object) -> str:
    """A config value for a markdown cell: floats to 3 s.f., and `|` escaped so the table holds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    text = format(value, ".3g") if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def table(rows: Iterable[Any], columns: Sequence[Column]) -> list[str]:
    """A GitHub markdown table, a line per row; text columns left-aligned, numbers right-aligned."""
    header = [column.title for column in columns]
    align = [":---" if column.spec is None else "---:" for column in columns]
    lines = [[fmt(shown(row, column), column.spec) for column in columns] for row in rows]
    return [f"| {' | '.join(line)} |" for line in (header, align, *lines)]


def shown(row: Any, column: Column) -> object:
    """What a markdown cell shows: the row's value under the column's key, with its interval if asked for."""
    if column.interval:
        low, high = column.interval
        return Interval(_value(row, column.key), _value(row, low), _value(row, high))
    return _value(row, column.key)


def _value(row: Any, key: Key) -> object:
    return key(row) if callable(key) else row.get(key)
