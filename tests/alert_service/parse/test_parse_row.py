"""The lazily typed row equals the eagerly typed one (normalise_columns), value by value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.errors import ParseError
from alert_service.parse import normalise_columns, parse_line
from alert_service.parse.row import Row, lazy_columns, typed_columns
from alert_service.parse.values import NUMERIC_COLUMNS

COLUMNS = [
    "remote_port",
    "uid",
    "pid",
    "socket",
    "family",
    "start_time",
    "name",
    "cmdline",
    "remote_address",
    "state",
]
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "443",
            "0012",
            "-1",
            "1.5",
            " 7",
            "٣",
            "x",
            "9" * 41,
            "9" * 40,
            "a\\x41b",
            "1 2",
            " ",
            "12 ",
            "\\x0A",
        ]
    ),
    st.text(max_size=6),
    st.integers(-5, 70000),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(COLUMNS), VALUES, max_size=len(COLUMNS)))
def test_a_lazy_row_reads_as_normalise_columns_types_it(raw: dict[str, object]) -> None:
    try:
        eager = normalise_columns(raw)
    except ParseError:
        eager = None
    row = lazy_columns(dict(raw))
    if row is None:
        return  # typed eagerly by the parser, as before
    assert eager is not None, "the check let through a row normalise_columns refuses"
    typed = typed_columns(row)  # what the pipeline's views read with aggregation rules
    for key in COLUMNS:
        assert row.get(key) == eager.get(key)
        assert (key in row) is (key in eager)
        assert typed.get(key) == row.get(key)
        assert type(typed.get(key)) is type(row.get(key))
    assert dict(row.items()) == eager
    assert list(row) == list(eager)
    assert row == eager


def test_parse_line_gives_lazy_rows_for_text_lines_and_typed_values() -> None:
    line = (
        b'{"name":"pack_tracked_connections_tracked_connections","hostIdentifier":"h",'
        b'"unixTime":1,"columns":{"remote_port":"443","uid":"","name":"curl"},"action":"added"}'
    )
    (event,) = parse_line(line)
    assert isinstance(event.columns, Row)
    assert event.columns.get("remote_port") == 443
    assert event.columns["uid"] is None
    assert dict(event.columns) == {"remote_port": 443, "uid": None, "name": "curl"}
    assert "remote_port" in NUMERIC_COLUMNS


def test_a_bad_numeric_value_is_still_a_parse_error() -> None:
    line = (
        b'{"name":"q","hostIdentifier":"h","unixTime":1,'
        b'"columns":{"remote_port":"44x","name":"curl"},"action":"added"}'
    )
    with pytest.raises(ParseError, match="remote_port"):
        parse_line(line)
