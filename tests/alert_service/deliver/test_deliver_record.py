"""The outbox record codec: version 1 round trips, records written before versioning
still decode (existing state databases keep working), bad records raise RecordError."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from deliver_support import make_alert

from alert_service.config import build_config
from alert_service.errors import ParseError, RecordError
from alert_service.match import Alert
from alert_service.pipeline import Pipeline
from alert_service.state import open_state
from alert_service.state.baseline import DigestAlert
from alert_service.state.record import RECORD_VERSION, decode_record, encode_record


def _digest() -> DigestAlert:
    members = [
        make_alert(rule="ioc", counter=0, remote_address=f"203.0.113.{i}") for i in (1, 2, 3)
    ]
    return DigestAlert(
        "digest-test-0001",
        "ioc",
        ("hook",),
        members[0].event,
        tuple(m.event for m in members),
        tuple(m.id for m in members),
    )


def _legacy(alert: Alert) -> str:
    """A payload as stored before records were versioned: the bare ``as_dict()``."""
    return json.dumps(alert.as_dict(), ensure_ascii=False, separators=(",", ":"))


def test_a_record_round_trips_with_its_window_and_name_parts() -> None:
    alert = make_alert()
    text = encode_record(alert, 60.0)
    assert json.loads(text)["v"] == RECORD_VERSION
    record = decode_record(text, ("hook",))
    assert record.alert == alert  # every field, calendar time and pack split included
    assert record.members == (alert,)
    assert (record.dedup_window_secs, record.digest) == (60.0, False)
    assert decode_record(encode_record(alert)).dedup_window_secs is None


def test_a_digest_round_trips_with_each_member_id() -> None:
    digest = _digest()
    record = decode_record(encode_record(digest), ("hook",))
    assert record.digest
    assert [m.id for m in record.members] == list(digest.member_ids)
    assert [m.event.columns for m in record.members] == [e.columns for e in digest.rows]
    assert record.alert.id == digest.id
    assert record.as_alert().as_dict() == digest.as_dict()


def test_a_record_written_before_versioning_still_decodes() -> None:
    alert = make_alert()
    record = decode_record(_legacy(alert), ("hook",))
    assert record.alert == replace(alert, event=replace(alert.event, calendar_time=""))
    assert record.alert.id == alert.id
    assert record.dedup_window_secs is None
    digest = _digest()
    old = decode_record(_legacy(digest), ("hook",))
    assert old.digest
    assert [m.id for m in old.members] == list(digest.member_ids)
    assert old.as_alert().as_dict() == digest.as_dict()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1]", "not an object"),
        ('{"v": 99}', "unknown version 99"),
        ('{"id": "y"}', "KeyError"),
        ('{"v": 1, "alert": {}}', "KeyError"),
    ],
)
def test_a_bad_record_raises_its_own_error(text: str, reason: str) -> None:
    with pytest.raises(RecordError, match=reason) as info:
        decode_record(text)
    assert not isinstance(info.value, ParseError)


def test_a_digest_whose_rows_do_not_pair_up_is_refused() -> None:
    doc = json.loads(encode_record(_digest()))
    doc["digest"]["alert_ids"].pop()
    with pytest.raises(RecordError, match="do not pair up"):
        decode_record(json.dumps(doc))


def test_pending_rows_of_an_existing_database_are_upgraded_at_start(tmp_path: Path) -> None:
    config = build_config(
        {
            "sources": [{"path": str(tmp_path / "results.log")}],
            "known_packs": ["my_pack"],
            "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/"}],
            "rules": [{"name": "reverse-shell", "notify": ["hook"], "dedup_window_secs": 60}],
        }
    )
    alert = make_alert()
    alert = replace(alert, event=replace(alert.event, name="pack_my_pack_tracked_connections"))
    conn = open_state(tmp_path / "state.sqlite3")
    for state, alert_id in (("pending", "a"), ("sent", "b")):
        conn.execute(
            "INSERT INTO outbox (alert_id, rule, destination, payload, state, created_at,"
            " next_attempt_at) VALUES (?, 'reverse-shell', 'hook', ?, ?, 0, 0)",
            (alert_id, _legacy(alert), state),
        )
    Pipeline(config, state=conn)
    rows = dict(conn.execute("SELECT alert_id, payload FROM outbox").fetchall())
    assert rows["b"] == _legacy(alert)  # finished rows are left as they were
    record = decode_record(rows["a"])
    assert json.loads(rows["a"])["v"] == RECORD_VERSION
    assert record.dedup_window_secs == 60.0
    assert (record.alert.event.pack, record.alert.event.query) == ("my_pack", "tracked_connections")
    assert record.alert.as_dict() == alert.as_dict()
    conn.close()
