"""Value conversions of the osqueryd stand-in (a test double, not osquery).

Three conversions osqueryd applies to values, re-implemented here:

* extension strings into typed SQLite values, per declared column type
  (upstream osquery 5.23 osquery/sql/dynamic_table_row.cpp, osquery/utils/conversions/tryto.h);
* SQLite result values into the strings osqueryd logs and returns
  (osquery 5.23 osquery/utils/conversions/castvariant.h,
  osquery/sql/sqlite_util.cpp readRows);
* escaping of non-printable bytes before differential results are compared
  (osquery 5.23 osquery/sql/sql.cpp
  escapeNonPrintableBytes, the 5.22.1+ behaviour where valid UTF-8 passes).

Strings in this package are Python ``str``; bytes that are not valid UTF-8
(possible only from SQLite BLOB/text results) are carried as
``surrogateescape`` code points U+DC80..U+DCFF, so the original bytes can be
written back unchanged.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "BIGINT",
    "BLOB",
    "DOUBLE",
    "INTEGER",
    "KNOWN_TYPES",
    "TEXT",
    "UNKNOWN",
    "UNSIGNED_BIGINT",
    "SqlValue",
    "TypedValue",
    "bytes_to_str",
    "cast_to_string",
    "convert_for_column",
    "escape_non_printable",
    "strtod_full",
    "strtol_base0",
    "strtoll_base10",
]

TEXT = "TEXT"
INTEGER = "INTEGER"
BIGINT = "BIGINT"
UNSIGNED_BIGINT = "UNSIGNED BIGINT"
DOUBLE = "DOUBLE"
BLOB = "BLOB"
UNKNOWN = "UNKNOWN"
KNOWN_TYPES: frozenset[str] = frozenset({TEXT, INTEGER, BIGINT, UNSIGNED_BIGINT, DOUBLE, BLOB})
"""Column type names osquery understands (osquery/core/sql/column.cpp)."""

SqlValue = int | float | str | None
"""A value as stored into SQLite (``None`` is SQL NULL)."""

TypedValue = int | float | str
"""A result value as osqueryd keeps it (RowDataTyped: long long, double or string)."""

_LONG_MIN = -(2**63)
_LONG_MAX = 2**63 - 1
_C_SPACE = " \t\n\v\f\r"
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def strtol_base0(text: str) -> int | None:
    """Parse like C++ ``std::stol(text, &pos, 0)`` on 64-bit Linux.

    Leading C whitespace and one sign are accepted; ``0x``/``0X`` selects hex
    (only when a hex digit follows), a leading ``0`` selects octal, otherwise
    decimal. The longest valid prefix is used, so ``"12abc"`` gives 12 and
    ``"010"`` gives 8.

    Args:
        text: the string an extension returned.

    Returns:
        The parsed value, or None where ``std::stol`` throws
        (``invalid_argument``: no digits; ``out_of_range``: beyond 64 bits).
    """
    return _strtol(text, 0)


def strtoll_base10(text: str) -> int | None:
    """Parse like C++ ``std::stoll(text, &pos, 10)`` (decimal prefix, 64-bit).

    Used for a ``rowid`` key (osquery/sql/dynamic_table_row.cpp get_rowid).

    Returns:
        The value, or None when ``std::stoll`` throws.
    """
    return _strtol(text, 10)


def _strtol(text: str, base: int) -> int | None:
    i = 0
    n = len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    negative = False
    if i < n and text[i] in "+-":
        negative = text[i] == "-"
        i += 1
    if base == 0 and i < n and text[i] == "0":
        if i + 2 < n and text[i + 1] in "xX" and _digit_value(text[i + 2]) < 16:
            base = 16
            i += 2
        else:
            base = 8
    elif base == 0:
        base = 10
    start = i
    value = 0
    while i < n:
        d = _digit_value(text[i])
        if d >= base:
            break
        value = value * base + d
        i += 1
    if i == start:
        return None
    if negative:
        value = -value
    if value < _LONG_MIN or value > _LONG_MAX:
        return None
    return value


def _digit_value(ch: str) -> int:
    """Digit value of an ASCII alphanumeric character, 99 for anything else."""
    low = ch.lower()
    if len(low) == 1 and low in _DIGITS and ch.isascii():
        return _DIGITS.index(low)
    return 99


_DEC_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_HEX_FLOAT = re.compile(
    r"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?", re.ASCII
)
_SPECIAL_FLOAT = re.compile(r"([+-]?)(inf|infinity|nan(?:\([0-9A-Za-z_]*\))?)", re.IGNORECASE)


def strtod_full(text: str) -> float | None:
    """Parse like C ``strtod`` and require the whole string to be consumed.

    This is the DOUBLE column rule of osquery/sql/dynamic_table_row.cpp:
    leading whitespace is skipped, trailing characters make the value NULL.
    Decimal, hexadecimal (``0x1p3``), ``inf``/``infinity`` and ``nan`` forms
    are accepted, case-insensitively.

    Args:
        text: the string an extension returned.

    Returns:
        The value, or None where osqueryd would store NULL.
    """
    body = text.lstrip(_C_SPACE)
    if _DEC_FLOAT.fullmatch(body):
        return float(body)
    if _HEX_FLOAT.fullmatch(body):
        sign = -1.0 if body.startswith("-") else 1.0
        unsigned = body.lstrip("+-")
        mantissa = unsigned if ("p" in unsigned or "P" in unsigned) else unsigned + "p0"
        return sign * float.fromhex(mantissa)
    special = _SPECIAL_FLOAT.fullmatch(body)
    if special:
        sign = -1.0 if special.group(1) == "-" else 1.0
        if special.group(2).lower().startswith("nan"):
            return math.nan
        return sign * math.inf
    return None


def _to_int32(value: int) -> int:
    """Wrap to a signed 32-bit int, as ``sqlite3_result_int(long)`` does."""
    return ((value + 2**31) % 2**32) - 2**31


def convert_for_column(row: dict[str, str], column: str, column_type: str) -> SqlValue:
    """Convert one extension value to what osqueryd hands SQLite.

    Args:
        row: one row from the extension's ``generate`` reply (string map).
        column: the declared column name (only declared names are looked up).
        column_type: the declared type, e.g. "INTEGER"; unknown names act as
            UNKNOWN.

    Returns:
        NULL (None) for a missing key, an empty numeric value, an unparseable
        numeric value or an UNKNOWN column; the string unchanged for TEXT and
        BLOB; an int for INTEGER (32-bit wrapped) and BIGINT/UNSIGNED BIGINT
        (64-bit); a float for DOUBLE.
    """
    if column not in row:
        return None
    value = row[column]
    if column_type in (TEXT, BLOB):
        return value
    if column_type not in KNOWN_TYPES:
        return None
    if value == "":
        return None
    if column_type == INTEGER:
        parsed = strtol_base0(value)
        return None if parsed is None else _to_int32(parsed)
    if column_type in (BIGINT, UNSIGNED_BIGINT):
        return strtol_base0(value)
    return strtod_full(value)


def bytes_to_str(data: bytes) -> str:
    """Decode bytes as UTF-8, keeping invalid bytes as surrogate escapes.

    SQLite strings are C strings to osqueryd (``std::string(const char*)``), so
    everything from the first NUL byte on is dropped, as in
    osquery/sql/sqlite_util.cpp readRows.
    """
    nul = data.find(b"\x00")
    if nul >= 0:
        data = data[:nul]
    return data.decode("utf-8", "surrogateescape")


def cast_to_string(value: TypedValue) -> str:
    """Render a typed value as osqueryd's castVariant does.

    Integers in decimal; doubles with 15 significant digits (``%.15g``, as
    ``std::setprecision(15)``) plus ".0" when there is no "."; strings as they
    are (osquery/utils/conversions/castvariant.h).
    """
    if isinstance(value, bool):  # pragma: no cover - never produced
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            text = "-nan" if math.copysign(1.0, value) < 0 else "nan"
        elif math.isinf(value):
            text = "-inf" if value < 0 else "inf"
        else:
            text = f"{value:.15g}"
        if "." not in text:
            text += ".0"
        return text
    return value


def escape_non_printable(value: str) -> str:
    """Escape a string as osqueryd does before differential comparison.

    Bytes below 0x20 become the four characters ``\\xNN`` (uppercase hex);
    valid UTF-8 passes through; bytes that are not valid UTF-8 (surrogate
    escapes here) become ``\\xNN`` too. This is the 5.22.1+ behaviour
    (osquery 5.23 osquery/sql/sql.cpp escapeNonPrintableBytes).

    Args:
        value: a result string.

    Returns:
        The escaped string (the same object when nothing needed escaping).
    """
    if not any(ord(ch) < 0x20 or 0xDC80 <= ord(ch) <= 0xDCFF for ch in value):
        return value
    out: list[str] = []
    for ch in value:
        code = ord(ch)
        if code < 0x20:
            out.append(f"\\x{code:02X}")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02X}")
        else:
            out.append(ch)
    return "".join(out)
