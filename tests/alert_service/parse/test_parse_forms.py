"""Parse stage: recorded result lines of every form → typed events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alerts_support import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alert_service.errors import ParseError
from alert_service.match import alert_id
from alert_service.parse import Event, parse_line, parse_query_name


def lines_of(name: str) -> list[bytes]:
    return (DATA / name).read_bytes().splitlines()


def parse_file(name: str) -> list[Event]:
    return [event for line in lines_of(name) for event in parse_line(line)]


def test_event_form() -> None:
    removed, added, unknown = parse_file("event.jsonl")
    assert removed.action == "removed"
    assert added.action == "added"
    assert added.name == "pack_tracked_connections_tracked_connections"
    assert (added.pack, added.query) == ("tracked_connections", "tracked_connections")
    assert added.host_identifier == "web-01"
    assert added.calendar_time == "Tue Sep  2 07:05:09 2025 UTC"
    assert (added.unix_time, added.epoch, added.counter) == (1756796709, 0, 3)
    assert added.decorations == {}
    cols = added.columns
    assert cols["pid"] == 812
    assert cols["remote_port"] == 443
    assert cols["socket"] == 345678
    assert cols["net_namespace"] == 4026531840
    assert cols["remote_address"] == "93.184.216.34"
    assert cols["name"] == "curl"
    assert cols["community_id"] == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="
    # Empty numerics become None; empty text stays "".
    assert unknown.columns["pid"] is None
    assert unknown.columns["uid"] is None
    assert unknown.columns["name"] == ""
    assert unknown.column("not_a_column") is None


def test_columns_are_read_only() -> None:
    event = parse_file("event.jsonl")[1]
    with pytest.raises(TypeError):
        event.columns["pid"] = 1  # type: ignore[index]


def test_batch_form_gives_one_event_per_row_removed_first() -> None:
    events = parse_file("batch.jsonl")
    assert [(e.action, e.columns["local_port"]) for e in events] == [
        ("removed", 40001),
        ("added", 40002),
        ("added", 40003),
    ]
    assert all(e.counter == 4 for e in events)


def test_batch_first_run_with_no_rows_gives_no_events() -> None:
    assert parse_line(lines_of("batch.jsonl")[1]) == []


def test_snapshot_forms() -> None:
    events = parse_file("snapshot.jsonl")
    assert [e.action for e in events] == ["snapshot"] * 3
    assert [e.columns["local_port"] for e in events] == [40010, 40011, 40012]
    assert events[0].query == "snapshot_connections"
    assert events[0].counter == 0


def test_numerics_true_gives_the_same_values_and_ids_as_strings() -> None:
    numeric = parse_file("numerics.jsonl")
    text_added = parse_file("event.jsonl")[1]
    text_batch = parse_file("batch.jsonl")[2]
    assert numeric[0].columns == text_added.columns
    assert numeric[1].columns == text_batch.columns
    assert alert_id(numeric[0]) == alert_id(text_added)
    assert alert_id(numeric[1]) == alert_id(text_batch)


def test_fleet_names_and_decorations() -> None:
    glob, team, top = parse_file("fleet.jsonl")
    assert (glob.pack, glob.query) == ("Global", "tracked_connections")
    assert glob.decorations == {
        "host_uuid": "4C4C4544-0042-3510-8052-B4C04F4E3132",
        "hostname": "web-01.prod.example.com",
    }
    assert (team.pack, team.query) == ("team-3", "tracked_connections")
    assert team.decorations["hostname"] == "mac-17.local"
    # --decorations_top_level
    assert top.decorations == {"host_uuid": "77AA", "hostname": "ws-22.corp"}
    assert "numerics" not in top.decorations


def test_escaped_bytes_are_decoded_and_kept_as_logged() -> None:
    control, old_utf8, raw_utf8 = parse_file("escapes.jsonl")
    assert control.columns["cmdline"] == "sh -c \nid\tx"
    assert control.logged["cmdline"] == "sh -c \\x0Aid\\x09x"
    assert old_utf8.columns["path"] == "/tmp/été/nc"
    assert old_utf8.logged == {"path": "/tmp/\\xC3\\xA9t\\xC3\\xA9/nc"}
    assert raw_utf8.columns["path"] == "/tmp/été/nc"
    assert raw_utf8.columns["username"] == "zoë"


def test_invalid_utf8_bytes_become_replacement_characters() -> None:
    line = (
        b'{"name":"q","hostIdentifier":"h","unixTime":1,"snapshot":'
        b'[{"path":"/tmp/\xff\xfex","pid":"1"}],"action":"snapshot"}'
    )
    (event,) = parse_line(line)
    assert event.columns["path"] == "/tmp/\ufffd\ufffdx"
    assert event.logged["path"] == "/tmp/\\xFF\\xFEx"


def test_numbers_as_strings_in_common_fields() -> None:
    line = (
        '{"name":"q","hostIdentifier":"h","calendarTime":"x","unixTime":"1756796709",'
        '"epoch":"2","counter":"7","columns":{"remote_port":""},"action":"added"}'
    )
    (event,) = parse_line(line)
    assert (event.unix_time, event.epoch, event.counter) == (1756796709, 2, 7)
    assert event.columns["remote_port"] is None


def test_unknown_columns_stay_text() -> None:
    line = (
        '{"name":"q","hostIdentifier":"h","unixTime":1,"numerics":true,'
        '"columns":{"extra_count":5,"ratio":0.5,"remote_port":443},"action":"added"}'
    )
    (event,) = parse_line(line)
    assert event.columns == {"extra_count": "5", "ratio": "0.5", "remote_port": 443}


EXPECTED_MALFORMED = [
    "invalid JSON",
    "expected a JSON object",
    '"name" is missing',
    '"hostIdentifier" is missing',
    '"unixTime" is missing',
    "unixTime: not an integer: 'soon'",
    '"action": expected added, removed or snapshot',
    "columns.remote_port: not an integer",
    "columns: expected an object",
    '"diffResults.added": expected an array',
    'none of "columns", "diffResults" or "snapshot"',
    "invalid JSON number NaN",
    "columns.pid: not an integer",
    "invalid JSON",
]


@pytest.mark.parametrize(
    ("line", "message"), list(zip(lines_of("malformed.jsonl"), EXPECTED_MALFORMED, strict=True))
)
def test_malformed_lines_raise_parse_error(line: bytes, message: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_line(line)
    assert message in str(info.value)


def test_blank_line_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="empty line"):
        parse_line(b"   ")


@pytest.mark.parametrize(
    ("name", "pack", "query"),
    [
        (
            "pack_tracked_connections_tracked_connections",
            "tracked_connections",
            "tracked_connections",
        ),
        ("pack_netmon_tracked", "netmon", "tracked"),
        ("pack_netmon_tracked_conns", "netmon", "tracked_conns"),
        ("pack/Global/tracked_connections", "Global", "tracked_connections"),
        ("pack/team-12/tracked_connections", "team-12", "tracked_connections"),
        ("pack/netmon/a/b", "netmon", "a/b"),
        ("tracked_connections", None, "tracked_connections"),
        ("pack_", None, "pack_"),
        ("pack/", None, "pack/"),
        ("package_x", None, "package_x"),
    ],
)
def test_query_names(name: str, pack: str | None, query: str) -> None:
    parts = parse_query_name(name)
    assert (parts.pack, parts.query) == (pack, query)


def test_known_packs_disambiguate_underscores() -> None:
    assert parse_query_name("pack_net_mon_conns", ["net_mon"]).pack == "net_mon"
    assert parse_query_name("pack_net_mon_conns", []).pack == "net"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children)
    ),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None, max_examples=150)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "hostIdentifier": json_values,
            "unixTime": json_values,
            "epoch": json_values,
            "counter": json_values,
            "columns": json_values,
            "action": st.sampled_from(["added", "removed", "snapshot", "x"]) | json_values,
            "diffResults": json_values,
            "snapshot": json_values,
            "decorations": json_values,
        },
    )
)
def test_arbitrary_json_objects_raise_only_parse_error(doc: dict[str, object]) -> None:
    try:
        events = parse_line(json.dumps(doc))
    except ParseError:
        return
    for event in events:
        assert isinstance(event.unix_time, int)
        for value in event.columns.values():
            assert value is None or isinstance(value, int | str)


def test_fixture_files_end_with_newline() -> None:
    for path in Path(DATA).glob("*.jsonl"):
        assert path.read_bytes().endswith(b"\n"), path
