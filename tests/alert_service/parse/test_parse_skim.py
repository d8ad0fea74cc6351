"""A skimmed line (alert_service/parse/skim.py) is what the full event-form path reads.

``skim_line`` is the pipeline's first look at a line: when it gives a line, the
pipeline may pass the row over from the skim alone. So every line it gives must be
one ``event_form_row`` (and ``parse_line``, strict) accepts, with the same head and
the same typed value for every column the index may read; and it must give every
osquery line of the contract's columns that ``event_form_row`` takes, or the fast
path would be lost without a test failing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_parse_fastpaths import LINE, TEXTS, VALUES, event_docs

from alert_service.parse import parse_line
from alert_service.parse.line import event_form_row
from alert_service.parse.skim import SkimColumns, SkimLine, skim_line
from alert_service.parse.values import MAX_INT_DIGITS, NUMERIC_COLUMNS
from extension.columns import COLUMN_TYPES

CONTRACT = sorted(COLUMN_TYPES)
READ = [*CONTRACT, "x_new", "get", "__class__", ""]  # what a rule could ask for
PLAIN_TEXTS = st.sampled_from(["", "curl", "10.1.2.3", "2001:db8::1", "/usr/bin/ssh -v", "é"])
ONE_IN_20 = st.integers(0, 19).map(lambda n: n == 0)
NUMBER_TEXTS = st.sampled_from(["", "0", "443", "007", "9" * MAX_INT_DIGITS, "1756796709"])


@st.composite
def skim_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Event-form documents whose columns are mostly the contract's, with text values
    (numbers valid or not), sometimes any other value or an unknown column."""
    if draw(st.integers(0, 3)) == 0:
        return dict(draw(event_docs()))
    doc: dict[str, Any] = {
        "name": draw(st.sampled_from(["pack_tracked_connections_tracked_connections", "q"])),
        "hostIdentifier": draw(TEXTS),
        "calendarTime": draw(TEXTS),
        "unixTime": draw(st.integers(0, 2**40)),
        "epoch": draw(st.integers(0, 3)),
        "counter": draw(st.integers(0, 3)),
        "numerics": False,
        "action": draw(st.sampled_from(["added", "removed", "snapshot"])),
    }
    columns: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(CONTRACT), max_size=len(CONTRACT))):
        plain = NUMBER_TEXTS if key in NUMERIC_COLUMNS else PLAIN_TEXTS
        columns[key] = draw(st.one_of(plain, TEXTS, VALUES) if draw(ONE_IN_20) else plain)
    if draw(ONE_IN_20):
        columns["x_new"] = "1"
    doc["columns"] = columns
    return doc


def assert_skim_is_the_full_path(line: bytes) -> None:
    skimmed = skim_line(line)
    found = event_form_row(line)
    if skimmed is None:
        if found is not None:  # taken by the full path only: a column of another table
            assert not set(found[0].columns) <= set(CONTRACT)
        return
    (event,) = parse_line(line)  # strict everywhere
    assert parse_line(line, frozenset({"tracked_connections"}), frozenset({"x"})) == [event]
    head = (
        skimmed.name,
        skimmed.host_identifier,
        skimmed.unix_time,
        skimmed.epoch,
        skimmed.counter,
        skimmed.action,
    )
    assert head == (
        event.name,
        event.host_identifier,
        event.unix_time,
        event.epoch,
        event.counter,
        event.action,
    )
    for column in READ:
        assert skimmed.columns.get(column) == event.columns.get(column), column
    if found is None:  # a JSON null in a TEXT column: the general path types it None
        assert b"null" in line
        return
    assert head == (*(getattr(found[0], f) for f in head_fields), found[1])
    for column in READ:
        assert skimmed.columns.get(column) == found[2].get(column), column


head_fields = ("name", "host_identifier", "unix_time", "epoch", "counter")


@settings(max_examples=1500, deadline=None)
@given(doc=skim_docs())
def test_a_skimmed_line_is_the_full_paths_line(doc: dict[str, Any]) -> None:
    assert_skim_is_the_full_path(json.dumps(doc, ensure_ascii=False).encode())


@settings(max_examples=1000, deadline=None)
@given(
    cuts=st.lists(
        st.tuples(st.integers(0, len(LINE)), st.integers(0, 3), st.binary(max_size=3)),
        min_size=1,
        max_size=3,
    )
)
def test_a_skimmed_line_is_the_full_paths_line_on_corrupted_lines(
    cuts: list[tuple[int, int, bytes]],
) -> None:
    line = LINE
    for at, drop, insert in cuts:
        line = line[:at] + insert + line[at + drop :]
    assert_skim_is_the_full_path(line)


def test_an_osquery_line_of_every_column_is_skimmed() -> None:
    columns = {c: ("17" if c in NUMERIC_COLUMNS else f"v-{c}") for c in CONTRACT}
    doc = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": "h",
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709,
        "epoch": 0,
        "counter": 3,
        "numerics": False,
        "columns": columns,
        "action": "removed",
    }
    line = json.dumps(doc, separators=(",", ":")).encode()
    skimmed = skim_line(line)
    assert skimmed is not None
    assert skimmed.columns.get("remote_port") == 17
    assert skimmed.columns.get("remote_address") == "v-remote_address"
    assert_skim_is_the_full_path(line)
    refused = [
        {**columns, "x_new": "1"},  # a column the contract lacks
        {**columns, "pid": "-1"},  # a number text_row leaves to normalise_columns
        {**columns, "pid": "9" * (MAX_INT_DIGITS + 1)},  # too long: an error in strict mode
        {**columns, "pid": None},  # null in a number column: None, or an error
    ]
    for other in refused:
        assert skim_line(json.dumps({**doc, "columns": other}).encode()) is None
    assert skim_line(line.replace(b'"v-name"', b'"c\\\\x41rl"')) is None  # an escape


def test_absent_and_empty_numbers_read_alike_absent_text_reads_none() -> None:
    line = LINE.replace(b'"remote_port":""', b'"local_address":""')
    skimmed = skim_line(line)
    assert skimmed is not None
    assert (skimmed.columns.get("remote_port"), skimmed.columns.get("local_port")) == (None, None)
    assert (skimmed.columns.get("local_address"), skimmed.columns.get("path")) == ("", None)


def test_the_skim_columns_are_the_contracts() -> None:
    fields = SkimColumns.__struct_fields__
    assert list(fields) == sorted(COLUMN_TYPES)  # osquery's order
    defaults = dict(zip(fields, SkimColumns.__struct_defaults__, strict=True))
    assert {f for f, d in defaults.items() if d == ""} == set(NUMERIC_COLUMNS)
    assert {f for f, d in defaults.items() if d is None} == set(COLUMN_TYPES) - NUMERIC_COLUMNS
    assert set(SkimLine.__struct_fields__) == {
        "name",
        "host_identifier",
        "unix_time",
        "columns",
        "action",
        "calendar_time",
        "epoch",
        "counter",
        "numerics",
        "decorations",
    }
