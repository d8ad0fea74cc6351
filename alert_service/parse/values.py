"""Turn logged column values into typed values, once, using the column contract.

osquery logs every value as a string unless ``--logger_numerics`` is set, in which case
INTEGER/BIGINT (and DOUBLE) columns are JSON numbers (docs/design/osquery-interfaces.md §4,
osquery/utils/conversions/castvariant.h). Both forms give the same typed value here:

* a column of type INTEGER or BIGINT in :data:`extension.columns.COLUMN_TYPES` → ``int``;
  an empty string, and the text ``None`` (a producer writing Python's None), → None;
  text must be plain ASCII decimal (``-?[0-9]+``, at most
  :data:`MAX_INT_DIGITS` digits);
* a TEXT column or a column the contract does not know → ``str`` (numbers are
  written back as decimal text);
* JSON ``null`` → None.

Text is decoded from osquery's byte escapes (:func:`decode_osquery_escapes`) when the
caller asks for it (``logged``): osquery writes bytes below 0x20 and bytes ≥0x80 that
are not part of valid UTF-8 (before 5.22.1: every byte ≥0x80) as the four characters
``\\xNN``; the text as logged is kept for the payload.

This is the only place where column values are typed; :func:`normalise_columns` is on
the hot path of ingestion (one call per result row), so its common case — every value
a string — avoids per-value function calls: the row is copied whole, text values are
only checked, and only INTEGER/BIGINT values are written again. Integer text of the
columns in :data:`REPEATING_COLUMNS` (values shared by many rows: address family,
protocol, remote port, uid, network namespace, the time columns of one second) is
looked up in a bounded cache of text already checked and converted, which costs one
dict lookup instead of the checks and ``int()``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from alert_service.errors import ParseError
from alert_service.parse.event import ColumnValue
from extension.columns import COLUMN_TYPES

__all__ = [
    "INT_CACHE_ENTRIES",
    "MAX_INT_DIGITS",
    "NUMERIC_COLUMNS",
    "REPEATING_COLUMNS",
    "decode_osquery_escapes",
    "normalise_columns",
    "to_int",
]

MAX_INT_DIGITS: Final = 40
"""Longest integer text accepted, in digits (a BIGINT needs at most 20). Longer text is
refused before ``int()`` runs, which also keeps clear of Python's 4300-digit limit."""

NUMERIC_COLUMNS: Final[frozenset[str]] = frozenset(
    name for name, kind in COLUMN_TYPES.items() if kind in ("INTEGER", "BIGINT")
)
"""Columns of the contract typed as ``int`` (INTEGER and BIGINT)."""

REPEATING_COLUMNS: Final[frozenset[str]] = NUMERIC_COLUMNS & frozenset(
    {"family", "protocol", "remote_port", "uid", "net_namespace", "first_seen", "last_seen"}
)
"""INTEGER/BIGINT columns whose text goes through the conversion cache: few distinct
values, each seen in many rows. Columns that are mostly new on each row (``socket``,
``pid``, ``local_port``) are converted directly, so they do not churn the cache."""

INT_CACHE_ENTRIES: Final = 4096
"""Most texts kept in the conversion cache; it is emptied when full."""

# Integer text already checked (plain ASCII decimal, at most MAX_INT_DIGITS digits) →
# its value. Only valid text is ever stored, so a hit needs no check.
_INT_CACHE: dict[str, int] = {}


_ESCAPE: Final = re.compile(r"\\x([0-9A-F]{2})")


def decode_osquery_escapes(text: str) -> str:
    """Undo osquery's ``\\xNN`` byte escapes: the original bytes, read as UTF-8.

    osquery 5.x writes every string column of a scheduled query's results through
    ``escapeNonPrintableBytes`` (osquery/sql/sql.cpp, applied by
    ``SQLInternal::escapeResults`` in osquery/sql/sqlite_util.cpp from
    osquery/dispatcher/scheduler.cpp): a byte below 0x20, and a byte ≥0x80 that does
    not start a valid UTF-8 sequence (5.22.1 and later; every byte ≥0x80 before), is
    written as a backslash, ``x`` and two **uppercase** hex digits; everything else,
    the backslash itself included, is copied. Snapshot rows written raw with invalid
    UTF-8 reach us as the same escapes (:func:`alert_service.parse.line.decode_line`).

    So ``\\x`` + two uppercase hex digits is turned back into that byte, the bytes are
    decoded as UTF-8 with each invalid byte as U+FFFD, and a NUL byte (which no
    program argument or path can hold) becomes U+FFFD too. Other text, lowercase hex
    included, is kept. The escape is not reversible in one case: a value that really
    contained the text ``\\x41`` reads as ``A``, as osquery logged it the same way.

    Args:
        text: a column value as logged.

    Returns:
        The decoded text (``text`` itself when it holds no escape).
    """
    parts = _ESCAPE.split(text)
    if len(parts) == 1:
        return text
    buf = bytearray()
    for i, part in enumerate(parts):
        if i % 2:
            buf.append(int(part, 16))
        else:
            buf += part.encode("utf-8", "surrogatepass")
    return buf.decode("utf-8", "replace").replace("\0", "\ufffd")


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


def normalise_columns(
    raw: object,
    where: str = "columns",
    logged: dict[str, str] | None = None,
    *,
    strict: bool = True,
) -> dict[str, ColumnValue]:
    """Type every value of one logged row.

    Args:
        raw: the row object from the line (``columns``, or one element of
            ``diffResults.added`` / ``snapshot``).
        where: location used in error messages, e.g. ``"diffResults.added[2]"``.
        logged: when given, text values holding osquery's ``\\xNN`` escapes are
            decoded (:func:`decode_osquery_escapes`) and their text as logged is put
            here, column → logged text. None leaves text as logged (the caller knows
            the line holds no escape).
        strict: False for a row of a query other than the pack's, whose columns
            may share a name with the contract's but not its type: an INTEGER/BIGINT
            value that is not integer text stays text, and an object or array
            becomes its JSON text, instead of an error.

    Returns:
        A new dict, column name → ``int`` | ``str`` | None, in the row's key order
        (``raw`` is not changed).

    Raises:
        ParseError: ``raw`` is not an object, or a value has the wrong shape (an
            object/array, or non-integer text in an INTEGER/BIGINT column).
    """
    if isinstance(raw, dict):
        row: dict[str, object] = raw
        out: dict[str, ColumnValue] = raw.copy()  # the common case: text stays as is
    elif isinstance(raw, Mapping):
        row = dict(raw)
        out = dict(raw)
    else:
        raise ParseError(f"{where}: expected an object, got {type(raw).__name__}")
    numeric = NUMERIC_COLUMNS
    repeating = REPEATING_COLUMNS
    cache = _INT_CACHE
    for key, value in row.items():
        if key in numeric:
            if isinstance(value, str):
                if key in repeating:
                    number = cache.get(value)
                    if number is not None:
                        out[key] = number
                        continue
                if value.isascii() and value.isdigit() and len(value) <= MAX_INT_DIGITS:
                    number = int(value)
                    if key in repeating:
                        if len(cache) >= INT_CACHE_ENTRIES:
                            cache.clear()
                        cache[value] = number
                    out[key] = number
                elif not value or value == "None":  # Python's None written as text
                    out[key] = None
                elif strict:
                    out[key] = to_int(value, f"{where}.{key}")
                else:
                    out[key] = _lenient(value, where, key, logged)
            elif value is not None:
                out[key] = (
                    to_int(value, f"{where}.{key}")
                    if strict
                    else _lenient_number(value, where, key)
                )
        elif value.__class__ is str:
            if logged is not None and "\\x" in value:
                decoded = decode_osquery_escapes(value)
                if decoded != value:
                    out[key] = decoded
                    logged[key] = value
        elif value is not None:
            out[key] = _to_text(value, f"{where}.{key}") if strict else _json_text(value)
    return out


def _json_text(value: object) -> str:
    """Any JSON value as text: a number or boolean as JSON writes it, else compact JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):  # digit limit, nesting
        return ""


def _lenient_number(value: object, where: str, key: str) -> ColumnValue:
    """A non-text value of a numeric column of another query: its int, else its text."""
    try:
        return to_int(value, f"{where}.{key}")
    except ParseError:
        return _json_text(value)


def _lenient(value: str, where: str, key: str, logged: dict[str, str] | None) -> ColumnValue:
    """Text of a numeric column of another query: its int (``-5``), else the text."""
    number = _int_text(value)
    if number is not None:
        return number
    if logged is not None and "\\x" in value:
        decoded = decode_osquery_escapes(value)
        if decoded != value:
            logged[key] = value
            return decoded
    return value
