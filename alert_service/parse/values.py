"""Turn logged column values into typed values, once, using the column contract.

osquery logs every value as a string unless ``--logger_numerics`` is set, in which case
INTEGER/BIGINT (and DOUBLE) columns are JSON numbers (osquery-protocol-and-logs.md §4,
osquery/utils/conversions/castvariant.h). Both forms give the same typed value here:

* a column of type INTEGER or BIGINT in :data:`extension.columns.COLUMN_TYPES` → ``int``;
  an empty string → None; text must be plain ASCII decimal (``-?[0-9]+``, at most
  :data:`MAX_INT_DIGITS` digits);
* a TEXT column or a column the contract does not know → ``str`` (numbers are
  written back as decimal text);
* JSON ``null`` → None.

Text is kept as logged: osquery writes bytes below 0x20 (and, before 5.22.1, all bytes
≥0x80) as the literal four characters ``\\xNN`` (osquery/sql/sql.cpp
escapeNonPrintableBytes); those stay as they are.

This is the only place where column values are typed; :func:`normalise_columns` is on
the hot path of ingestion (one call per result row), so its common case — every value
a string — avoids per-value function calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from alert_service.errors import ParseError
from alert_service.parse.event import ColumnValue
from extension.columns import COLUMN_TYPES

__all__ = ["MAX_INT_DIGITS", "NUMERIC_COLUMNS", "normalise_columns", "to_int"]

MAX_INT_DIGITS: Final = 40
"""Longest integer text accepted, in digits (a BIGINT needs at most 20). Longer text is
refused before ``int()`` runs, which also keeps clear of Python's 4300-digit limit."""

NUMERIC_COLUMNS: Final[frozenset[str]] = frozenset(
    name for name, kind in COLUMN_TYPES.items() if kind in ("INTEGER", "BIGINT")
)
"""Columns of the contract typed as ``int`` (INTEGER and BIGINT)."""


def _int_text(value: str) -> int | None:
    """Return the int of plain ASCII decimal text ``-?[0-9]+``, or None if it is not."""
    digits = value[1:] if value[:1] == "-" else value
    if digits.isdigit() and digits.isascii() and len(digits) <= MAX_INT_DIGITS:
        return int(value)
    return None


def to_int(value: object, what: str) -> int:
    """Return ``value`` (a JSON number or decimal text) as an int.

    Args:
        value: an ``int``, an integral ``float``, or text like ``"-12"`` (plain ASCII
            digits with an optional leading ``-``; no spaces, ``+`` or ``_``).
        what: name used in the error message, e.g. ``"unixTime"``.

    Raises:
        ParseError: ``value`` is not an integer (booleans, ``"1.5"``, non-finite floats
            and text longer than :data:`MAX_INT_DIGITS` digits included).
    """
    if value.__class__ is int:  # the common case first: one identity test
        return value
    if isinstance(value, str):
        number = _int_text(value)
        if number is not None:
            return number
    elif isinstance(value, float):
        if value.is_integer():
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    raise ParseError(f"{what}: not an integer: {value!r:.60}")


def _to_text(value: object, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ParseError(f"{what}: expected text, got {value!r}")
    if isinstance(value, int | float):
        return str(value)
    raise ParseError(f"{what}: expected text, got {type(value).__name__}")


def normalise_columns(raw: object, where: str = "columns") -> dict[str, ColumnValue]:
    """Type every value of one logged row.

    Args:
        raw: the row object from the line (``columns``, or one element of
            ``diffResults.added`` / ``snapshot``).
        where: location used in error messages, e.g. ``"diffResults.added[2]"``.

    Returns:
        A new dict, column name → ``int`` | ``str`` | None, in the row's key order.

    Raises:
        ParseError: ``raw`` is not an object, or a value has the wrong shape (an
            object/array, or non-integer text in an INTEGER/BIGINT column).
    """
    if not isinstance(raw, Mapping):
        raise ParseError(f"{where}: expected an object, got {type(raw).__name__}")
    numeric = NUMERIC_COLUMNS
    out: dict[str, ColumnValue] = {}
    for key, value in raw.items():
        if value.__class__ is str:
            if key in numeric:
                if not value:
                    out[key] = None
                elif value.isdigit() and value.isascii() and len(value) <= MAX_INT_DIGITS:
                    out[key] = int(value)
                else:
                    out[key] = to_int(value, f"{where}.{key}")
            else:
                out[key] = value
        elif value is None:
            out[key] = None
        elif key in numeric:
            out[key] = to_int(value, f"{where}.{key}")
        else:
            out[key] = _to_text(value, f"{where}.{key}")
    return out
