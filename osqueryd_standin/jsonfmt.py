"""Compact JSON written the way osqueryd's rapidjson Writer writes it.

Part of the osqueryd stand-in (a test double, not osquery). Python's
``json.dumps(..., ensure_ascii=False, separators=(",", ":"))`` is close, but
rapidjson escapes other control characters as *uppercase* ``\\u00XX`` and
formats doubles differently, so this module serialises by hand
(upstream osquery 5.23 osquery/utils/json/json.cpp,
which wraps rapidjson's Writer).

Object key order is the caller's: pass dicts already in the order osqueryd
writes them.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import TypeAlias

__all__ = ["JsonValue", "dumps", "format_double"]

JsonValue: TypeAlias = str | int | float | bool | dict[str, "JsonValue"] | list["JsonValue"] | None
"""A JSON-serialisable value; dicts keep insertion order."""

_NAMED_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _dump_str(value: str) -> str:
    """Quote a string: escape ``"``, ``\\`` and control characters only."""
    out = ['"']
    for ch in value:
        named = _NAMED_ESCAPES.get(ch)
        if named is not None:
            out.append(named)
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _write_exponent(exp: int) -> str:
    return ("-" + str(-exp)) if exp < 0 else str(exp)


def format_double(value: float) -> str:
    """Format a double as rapidjson's Writer does (Grisu shortest + Prettify).

    Examples: 1.0 → "1.0", 0.5 → "0.5", 1e21 → "1e21", 1.5e-7 → "1.5e-7",
    1e20 → "100000000000000000000.0". Non-finite values, which rapidjson
    refuses by default, are written as ``NaN``/``Infinity``/``-Infinity``
    (its kWriteNanAndInfFlag spelling).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    dec = Decimal(repr(abs(value)))
    _, digit_tuple, exponent = dec.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(str(d) for d in digit_tuple).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + exponent
    if exponent >= 0 and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif length == 1:
        text = digits + "e" + _write_exponent(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + _write_exponent(kk - 1)
    return sign + text


def dumps(value: JsonValue) -> str:
    """Serialise compactly (no spaces), non-ASCII raw, rapidjson escaping.

    Args:
        value: str, int, float, bool, None, list or dict (insertion order).

    Returns:
        The JSON text, without a trailing newline.

    Raises:
        TypeError: for any other value type.
    """
    if isinstance(value, str):
        return _dump_str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, dict):
        return "{" + ",".join(_dump_str(k) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot serialise {type(value).__name__}")
