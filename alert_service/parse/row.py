"""A logged row typed on demand: the parse stage's fast path.

Most rows are read by the rules for a few columns and then dropped; typing every
INTEGER/BIGINT value of each row would cost more than decoding its JSON. So
:func:`lazy_columns` only *checks* a row at parse time — with a handful of calls that
each run over the whole row in C — and returns a :class:`Row` that converts a value
when it is read and the whole row when it is iterated. The values are exactly those
of :func:`~alert_service.parse.values.normalise_columns` (a property test compares
them), and a row the check does not accept (a non-text value, negative or
non-decimal numbers, an empty numeric column only) is typed eagerly by
``normalise_columns``, with its errors, as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Final, cast

from alert_service.parse.event import ColumnValue
from alert_service.parse.values import MAX_INT_DIGITS, NUMERIC_COLUMNS

__all__ = ["Row", "lazy_columns", "text_row", "typed_columns"]

_MISSING: Final = object()

_NUMERIC: Final = tuple(sorted(NUMERIC_COLUMNS))
_ABSENT: Final = ("",) * len(_NUMERIC)
_DIGITS: Final = f"[0-9]{{0,{MAX_INT_DIGITS}}}+"  # possessive: digits never give back
_NUMBERS: Final = re.compile(f"(?:{_DIGITS} ){{{len(_NUMERIC) - 1}}}{_DIGITS}").fullmatch
"""``len(_NUMERIC)`` texts, each empty or plain ASCII decimal of at most ``MAX_INT_DIGITS``
digits, joined by single spaces (a text holding a space adds one too many)."""


class Row(Mapping[str, ColumnValue]):
    """One row of columns, every value checked, INTEGER/BIGINT ones converted on read.

    Read-only. ``get``/``[]`` convert one value; iterating, ``len``, ``items()`` and
    the other views work on the whole typed row, built once.

    Args:
        raw: the row as decoded, every value text, every numeric one empty or plain
            ASCII decimal of at most ``MAX_INT_DIGITS`` digits (as
            :func:`lazy_columns` checked); kept, not copied.
    """

    __slots__ = ("_raw", "_typed", "text")

    def __init__(self, raw: dict[str, str]) -> None:
        self._raw = raw
        self._typed: dict[str, ColumnValue] | None = None
        self.text: Callable[[str], str | None] = raw.get
        """The text of a column as logged (None when the row lacks it): what ``get``
        gives for a TEXT column, without a Python call."""

    def get(self, key: str, default: ColumnValue = None) -> ColumnValue:  # type: ignore[override]
        """The typed value of column ``key``, ``default`` when the row lacks it."""
        value = self._raw.get(key)
        if value is None:
            return default
        if key in NUMERIC_COLUMNS:
            return int(value) if value else None
        return value

    def __getitem__(self, key: str) -> ColumnValue:
        value = self.get(key, _MISSING)  # type: ignore[arg-type]
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def typed(self) -> dict[str, ColumnValue]:
        """The whole typed row (built on first use; do not change it)."""
        typed = self._typed
        if typed is None:
            typed = self._typed = dict(self._raw)
            for key in NUMERIC_COLUMNS & typed.keys():
                value = typed[key]
                typed[key] = int(value) if value else None
        return typed

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def keys(self) -> KeysView[str]:
        return self.typed().keys()

    def items(self) -> ItemsView[str, ColumnValue]:
        return self.typed().items()

    def values(self) -> ValuesView[ColumnValue]:
        return self.typed().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.typed() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Row({self.typed()!r})"


def typed_columns(columns: Mapping[str, ColumnValue]) -> Mapping[str, ColumnValue]:
    """``columns`` as a plain mapping read by C ``get`` calls: a :class:`Row`'s whole
    typed row (:meth:`Row.typed`, built once per row and shared with whoever else
    asks), any other mapping as it is. Equal to ``columns`` column by column
    (tests/alert_service/parse/test_parse_row.py)."""
    return columns.typed() if columns.__class__ is Row else columns


def lazy_columns(raw: object) -> Row | None:
    """A :class:`Row` of ``raw`` when it passes the check, else None (type it eagerly).

    The check: ``raw`` is a ``dict`` whose values are all ``str`` and whose
    INTEGER/BIGINT values (:data:`~alert_service.parse.values.NUMERIC_COLUMNS`) are
    empty or plain ASCII decimal digits, at most ``MAX_INT_DIGITS`` each (one regex
    over them, joined). ``raw`` is kept by the row: the caller must not change it.
    """
    if raw.__class__ is not dict:
        return None
    row = cast(dict[str, str], raw)
    try:
        "".join(row.values())  # every value is text, or TypeError
    except TypeError:
        return None
    return text_row(row)


def text_row(raw: dict[str, str]) -> Row | None:
    """:func:`lazy_columns` of a dict already known to hold only text values."""
    # The numeric values (absent ones as ""), space-separated, checked by one regex.
    if _NUMBERS(" ".join(map(raw.get, _NUMERIC, _ABSENT))) is None:
        return None
    return Row(raw)
