"""Turn logged column values into typed values, once, using the column contract.

osquery logs every value as a string unless ``--logger_numerics`` is set, in which case
INTEGER/BIGINT (and DOUBLE) columns are JSON numbers (osquery-protocol-and-logs.md §4,
osquery/utils/conversions/castvariant.h). Both forms give the same typed value here:

* a column of type INTEGER or BIGINT in :data:`extension.columns.COLUMN_TYPES` → ``int``;
  an empty string → None;
* a TEXT column or a column the contract does not know → ``str`` (numbers are
  written back as decimal text);
* JSON ``null`` → None.

Text is kept as logged: osquery writes bytes below 0x20 (and, before 5.22.1, all bytes
≥0x80) as the literal four characters ``\\xNN`` (osquery/sql/sql.cpp
escapeNonPrintableBytes); those stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from alert_service.errors import ParseError
from alert_service.parse.event import ColumnValue
from extension.columns import COLUMN_TYPES

__all__ = ["normalise_columns", "to_int"]

_INT_RE = re.compile(r"-?[0-9]+")
_NUMERIC_TYPES = frozenset({"INTEGER", "BIGINT"})


def to_int(value: object, what: str) -> int:
    """Return ``value`` (a JSON number or decimal text) as an int.

    Args:
        value: an ``int``, an integral ``float``, or text like ``"-12"``.
        what: name used in the error message, e.g. ``"unixTime"``.

    Raises:
        ParseError: ``value`` is not an integer (booleans and ``"1.5"`` included).
    """
    if isinstance(value, bool):
        raise ParseError(f"{what}: not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value):
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
    out: dict[str, ColumnValue] = {}
    for key, value in raw.items():
        name = str(key)
        if value is None:
            out[name] = None
        elif COLUMN_TYPES.get(name) in _NUMERIC_TYPES:
            out[name] = None if value == "" else to_int(value, f"{where}.{name}")
        else:
            out[name] = _to_text(value, f"{where}.{name}")
    return out
