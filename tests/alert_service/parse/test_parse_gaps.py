"""Parse stage, ingestion gaps: huge numbers, unknown keys, Fleet wrappers, fuzzing.

One fixture file per line shape lives in data/ (see data/README.md); these tests add
the shapes the first fixtures did not cover and the crash cases found while
hardening the parser (docs/design/osquery-interfaces.md §4).
"""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from alerts_support import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alert_service.errors import ParseError
from alert_service.match import Alert, alert_id
from alert_service.parse import Event, glued_line_start, parse_line
from alert_service.parse.line import MAX_GLUED_CANDIDATES

BASE = {
    "name": "pack_tracked_connections_tracked_connections",
    "hostIdentifier": "web-01",
    "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
    "unixTime": 1756796709,
    "epoch": 0,
    "counter": 3,
    "numerics": False,
}


def event_line(**extra: object) -> bytes:
    doc = {**BASE, "columns": {"remote_port": "443", "remote_address": "192.0.2.1"}}
    doc.update(extra)
    doc.setdefault("action", "added")
    return json.dumps(doc, separators=(",", ":")).encode()


def lines_of(name: str) -> list[bytes]:
    return (DATA / name).read_bytes().splitlines()


# -- crash cases (each was a failing test first) ---------------------------------


def test_integer_text_longer_than_pythons_digit_limit_is_a_parse_error() -> None:
    # int() refuses more than 4300 digits with ValueError, which used to escape.
    line = event_line(unixTime="1" * 5000)
    with pytest.raises(ParseError, match=r"unixTime: not an integer"):
        parse_line(line)


def test_json_number_longer_than_pythons_digit_limit_is_a_parse_error() -> None:
    line = event_line().replace(b'"unixTime":1756796709', b'"unixTime":' + b"7" * 5000)
    with pytest.raises(ParseError, match="invalid JSON"):
        parse_line(line)


def test_huge_numeric_column_is_a_parse_error() -> None:
    line = event_line(columns={"pid": "9" * 4400})
    with pytest.raises(ParseError, match=r"columns\.pid: not an integer"):
        parse_line(line)


def test_unknown_top_level_boolean_is_ignored_not_a_decoration() -> None:
    # A future osquery field must not make every line malformed.
    (event,) = parse_line(event_line(some_new_flag=True, some_list=[1, 2], hostname="h.example"))
    assert event.decorations == {"hostname": "h.example"}


def test_nested_decoration_of_any_json_type_is_kept_as_text() -> None:
    (event,) = parse_line(
        event_line(decorations={"a": True, "b": None, "c": 5, "d": {"x": 1}, "e": "text"})
    )
    assert event.decorations == {"a": "true", "b": "", "c": "5", "d": '{"x":1}', "e": "text"}


# -- shapes ------------------------------------------------------------------------


def test_fleet_tls_wrapper_gives_the_events_of_each_data_item() -> None:
    inner = [json.loads(line) for line in lines_of("fleet.jsonl")]
    wrapper = {"node_key": "abc", "log_type": "result", "data": inner}
    events = parse_line(json.dumps(wrapper))
    assert [e.name for e in events] == [d["name"] for d in inner]
    assert events[1].pack == "team-3"


def test_fleet_log_type_status_gives_no_events() -> None:
    status = {"log_type": "status", "data": [{"severity": "0", "message": "hello"}]}
    assert parse_line(json.dumps(status)) == []


def test_log_type_member_on_a_result_line_is_not_a_decoration() -> None:
    (event,) = parse_line(event_line(log_type="result"))
    assert event.decorations == {}


def test_log_type_status_line_gives_no_events() -> None:
    assert parse_line(event_line(log_type="status")) == []


def test_fleet_wrapper_with_a_bad_item_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match=r"data\[1\]"):
        parse_line(json.dumps({"log_type": "result", "data": [json.loads(event_line()), 5]}))


def test_snapshot_event_lines_and_batch_lines_have_the_same_ids_as_event_lines() -> None:
    row = {"remote_port": "4444", "remote_address": "198.51.100.7", "pid": "10"}
    as_event = parse_line(event_line(columns=row))
    as_batch = parse_line(
        json.dumps({"diffResults": {"removed": [], "added": [row]}, **BASE}).encode()
    )
    assert alert_id(as_event[0]) == alert_id(as_batch[0])
    assert as_event[0].columns == {
        "remote_port": 4444,
        "remote_address": "198.51.100.7",
        "pid": 10,
    }


def test_negative_and_padded_numeric_text() -> None:
    (event,) = parse_line(event_line(columns={"pid": "-1", "uid": "007", "remote_port": ""}))
    assert event.columns == {"pid": -1, "uid": 7, "remote_port": None}


@pytest.mark.parametrize("bad", [" 1", "1 ", "+1", "1_000", "\u0661", "0x10", "1.0", "-"])
def test_numeric_text_must_be_plain_ascii_decimal(bad: str) -> None:
    with pytest.raises(ParseError, match=r"columns\.pid: not an integer"):
        parse_line(event_line(columns={"pid": bad}))


def test_integral_float_numerics_become_ints() -> None:
    (event,) = parse_line(event_line(unixTime=1756796709.0, columns={"pid": 12.0}))
    assert (event.unix_time, event.columns["pid"]) == (1756796709, 12)


def test_xnn_escapes_and_invalid_utf8_in_one_line() -> None:
    line = event_line(columns={"cmdline": "a\\x0Ab"}).replace(b"a\\\\x0Ab", b"a\\\\x0Ab\xc3(")
    (event,) = parse_line(line)
    assert event.columns["cmdline"] == "a\nb\ufffd("
    assert event.logged["cmdline"] == "a\\x0Ab\\xC3("


def test_every_fixture_line_parses_the_same_as_text_and_bytes() -> None:
    for path in sorted(DATA.glob("*.jsonl")):
        if path.name == "malformed.jsonl":
            continue
        for line in path.read_bytes().splitlines():
            assert parse_line(line) == parse_line(line.decode("utf-8")), (path.name, line[:60])


# -- fuzzing -----------------------------------------------------------------------


def _mangle(data: bytes, seed: int) -> bytes:
    rnd = random.Random(seed)
    out = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(4)
        pos = rnd.randrange(len(out) + 1)
        if op == 0 and out:
            del out[pos : pos + rnd.randint(1, 20)]
        elif op == 1:
            out[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif op == 2 and out:
            out[min(pos, len(out) - 1)] = rnd.choice(b'{}[]",:0123456789\\tfnu ')
        else:
            out[pos:pos] = rnd.choice([b'"', b"{", b"]", b'"\\x', b"\xff", b"1" * 5000, b"NaN"])
    return bytes(out)


SEED_LINES = [
    line
    for name in ("event.jsonl", "batch.jsonl", "snapshot.jsonl", "numerics.jsonl", "fleet.jsonl")
    for line in lines_of(name)
]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=400)
@given(index=st.integers(min_value=0, max_value=len(SEED_LINES) - 1), seed=st.integers())
def test_mangled_real_lines_never_crash_the_parser(index: int, seed: int) -> None:
    line = _mangle(SEED_LINES[index], seed)
    try:
        events = parse_line(line)
    except ParseError:
        return
    for event in events:
        assert isinstance(event, Event)
        assert isinstance(event.counter, int)
        for value in event.columns.values():
            assert value is None or isinstance(value, int | str)
        for value in event.decorations.values():
            assert isinstance(value, str)
        alert_id(event)  # the id must be computable for every accepted event
        payload = Alert(alert_id(event), "r", ("n",), event).as_dict()
        json.dumps(payload, ensure_ascii=False).encode("utf-8")  # storable and sendable


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_line(data)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.sampled_from(["", "0", "-1", "443", "1" * 4400, "10.0.0.1"])
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids),
    max_leaves=12,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=200)
@given(
    base=st.fixed_dictionaries(
        {
            "name": st.sampled_from(["pack/Global/q", "pack_tracked_connections_x", "q"]),
            "hostIdentifier": st.text(max_size=5),
            "unixTime": st.integers(min_value=0, max_value=2**40),
        }
    ),
    extra=st.dictionaries(
        st.sampled_from(
            [
                "epoch",
                "counter",
                "columns",
                "action",
                "diffResults",
                "snapshot",
                "decorations",
                "log_type",
                "data",
                "numerics",
                "calendarTime",
                "unknown_key",
            ]
        ),
        json_values,
    ),
)
def test_wellformed_heads_with_random_bodies_never_crash(
    base: dict[str, object], extra: dict[str, object]
) -> None:
    try:
        events = parse_line(json.dumps({**base, **extra}))
    except ParseError:
        return
    for event in events:
        alert_id(event)
        for value in event.decorations.values():
            assert isinstance(value, str)


@pytest.mark.parametrize(
    "text",
    [
        '"cmdline":"a\\ud800b"',  # a lone high surrogate escape
        '"cmdline":"a\\udc00"',  # a lone low surrogate escape
    ],
)
def test_lone_surrogate_escape_becomes_a_replacement_character(text: str) -> None:
    # Such text cannot be stored or sent as UTF-8: the parser replaces it (issue 12
    # item 8: the line is taken, not dropped).
    line = event_line().replace(b'"remote_port":"443"', text.encode() + b',"remote_port":"443"')
    (event,) = parse_line(line)
    assert "\ufffd" in str(event.columns["cmdline"])
    str(event.columns["cmdline"]).encode("utf-8")


def test_paired_surrogate_escape_is_one_character() -> None:
    line = event_line().replace(
        b'"remote_port":"443"', b'"cmdline":"\\ud83d\\ude00","remote_port":"443"'
    )
    (event,) = parse_line(line)
    assert event.columns["cmdline"] == "\U0001f600"


def test_fleet_envelope_fixture() -> None:
    result, status = lines_of("fleet_envelope.jsonl")
    events = parse_line(result)
    assert [(e.pack, e.query, e.counter) for e in events] == [
        ("Global", "tracked_connections", 5),
        ("Global", "tracked_connections", 5),
    ]
    assert events[0].decorations["hostname"] == "web-01.prod.example.com"
    assert events[1].columns["remote_port"] == 4444
    assert parse_line(status) == []


def test_baseline_fixture_is_a_first_run() -> None:
    events = [e for line in lines_of("baseline.jsonl") for e in parse_line(line)]
    assert [(e.counter, e.action, e.unix_time) for e in events] == [(0, "added", 1756800000)] * 2
    assert {e.host_identifier for e in events} == {"db-02"}


def test_glued_line_start_finds_the_complete_line_after_a_fragment() -> None:
    good = event_line()
    for fragment in (good[:1], good[:100], good[: len(good) - 1], b"xx", b'{"a":{"b":'):
        assert glued_line_start(fragment + good) == len(fragment)
    # Invalid UTF-8 in the complete line: read by the reference decoder.
    latin = event_line(columns={"name": "caf\u00e9"}).replace("é".encode(), b"\xe9")
    assert glued_line_start(b'{"name":"x' + latin) == len(b'{"name":"x')
    # A valid line, or text with no object to its end: nothing to recover.
    assert glued_line_start(good) is None
    assert glued_line_start(b'{"a": 1} {"b": ') is None
    assert glued_line_start(b"no braces") is None
    # A suffix that is JSON but not a result line is still found (the caller reports
    # its own parse error at that offset).
    assert glued_line_start(b'{"name":"x{"a":1}') == len(b'{"name":"x')
    # The number of candidates tried is bounded.
    many = b'{"x' * (MAX_GLUED_CANDIDATES + 1) + good
    assert glued_line_start(many) is None
    assert glued_line_start(b'{"x' * (MAX_GLUED_CANDIDATES - 1) + good) is not None
