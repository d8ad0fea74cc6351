"""Unit tests: value conversions, escaping, JSON formatting, version checks."""

from __future__ import annotations

import math

import pytest

from osqueryd_standin.jsonfmt import dumps, format_double
from osqueryd_standin.registry import version_at_least
from osqueryd_standin.values import (
    bytes_to_str,
    cast_to_string,
    convert_for_column,
    escape_non_printable,
    strtod_full,
    strtol_base0,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0x1F", 31),
        ("0X10", 16),
        ("010", 8),
        ("08", 0),
        ("0x", 0),
        ("12abc", 12),
        ("  -7", -7),
        ("+5", 5),
        ("abc", None),
        ("", None),
        ("-", None),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", None),
        ("-9223372036854775808", -(2**63)),
    ],
)
def test_strtol_base0_follows_std_stol(text: str, expected: int | None) -> None:
    assert strtol_base0(text) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0x1F", 31),
        ("010", 8),
        ("12abc", 12),
        ("2147483647", 2147483647),
        ("2147483648", -2147483648),
        ("4294967297", 1),
        ("", None),
        ("junk", None),
        ("99999999999999999999", None),
    ],
)
def test_integer_column_is_32_bit(value: str, expected: int | None) -> None:
    assert convert_for_column({"c": value}, "c", "INTEGER") == expected


@pytest.mark.parametrize("col_type", ["BIGINT", "UNSIGNED BIGINT"])
def test_bigint_columns_are_64_bit(col_type: str) -> None:
    assert convert_for_column({"c": "9000000000"}, "c", col_type) == 9000000000
    assert convert_for_column({"c": "0x10"}, "c", col_type) == 16
    assert convert_for_column({"c": "9223372036854775808"}, "c", col_type) is None
    assert convert_for_column({"c": ""}, "c", col_type) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.5", 1.5),
        (" 2", 2.0),
        ("1e3", 1000.0),
        ("-.5", -0.5),
        ("0x1p3", 8.0),
        ("2 ", None),
        ("1.5x", None),
        ("1_0", None),
        ("1e", None),
        ("", None),
    ],
)
def test_double_column_needs_the_whole_string(value: str, expected: float | None) -> None:
    assert convert_for_column({"c": value}, "c", "DOUBLE") == expected


def test_double_special_values() -> None:
    assert strtod_full("inf") == math.inf
    assert strtod_full("-Infinity") == -math.inf
    value = strtod_full("nan")
    assert value is not None
    assert math.isnan(value)


def test_text_blob_missing_and_unknown() -> None:
    row = {"t": "", "b": "raw\x01", "u": "5"}
    assert convert_for_column(row, "t", "TEXT") == ""
    assert convert_for_column(row, "b", "BLOB") == "raw\x01"
    assert convert_for_column(row, "missing", "TEXT") is None
    assert convert_for_column(row, "u", "UNKNOWN") is None


def test_escape_non_printable() -> None:
    assert escape_non_printable("a\nb\x1f") == "a\\x0Ab\\x1F"
    assert escape_non_printable("caf\u00e9 \u2603 \x7f") == "caf\u00e9 \u2603 \x7f"
    assert escape_non_printable(bytes_to_str(b"ok\xff\xc3")) == "ok\\xFF\\xC3"
    assert bytes_to_str(b"abc\x00def") == "abc"


def test_cast_to_string_like_castvariant() -> None:
    assert cast_to_string(5) == "5"
    assert cast_to_string(1.0) == "1.0"
    assert cast_to_string(0.1 + 0.2) == "0.3"
    assert cast_to_string(1e20) == "1e+20.0"
    assert cast_to_string("x") == "x"


def test_json_escaping_is_rapidjson_like() -> None:
    assert dumps({"a": 'x\x01\n"/\\\u00e9'}) == '{"a":"x\\u0001\\n\\"/\\\\\u00e9"}'
    assert dumps({"k": [1, 2.5, True, None]}) == '{"k":[1,2.5,true,null]}'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.0, "1.0"),
        (0.5, "0.5"),
        (-2.5, "-2.5"),
        (0.0, "0.0"),
        (123.456, "123.456"),
        (1e20, "100000000000000000000.0"),
        (1e21, "1e21"),
        (1.5e-7, "1.5e-7"),
        (1e-6, "0.000001"),
    ],
)
def test_format_double(value: float, expected: str) -> None:
    assert format_double(value) == expected


@pytest.mark.parametrize(
    ("sdk", "ok"),
    [
        ("1.7.6", False),
        ("1.6.9", False),
        ("0.9", False),
        ("1.7.7", True),
        ("1.8.0", True),
        ("3.0.7", True),
        ("0.0.0", True),
        ("", True),
    ],
)
def test_version_at_least(sdk: str, ok: bool) -> None:
    assert version_at_least("1.7.7", sdk) is ok
