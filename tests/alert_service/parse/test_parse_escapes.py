"""osquery's ``\\xNN`` byte escapes are decoded before matching (issue 12 item 1).

osquery 5.23 writes every string column of a scheduled query's rows through
``escapeNonPrintableBytes`` (osquery/sql/sql.cpp, called from
``SQLInternal::escapeResults`` in osquery/sql/sqlite_util.cpp, run by
osquery/dispatcher/scheduler.cpp): a byte below 0x20 becomes ``\\x`` + two uppercase
hex digits, and so does every byte ≥ 0x80 that is not part of a valid UTF-8 sequence
(before 5.22.1 every byte ≥ 0x80 was escaped). Printable ASCII, the backslash
included, is copied as is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from alerts_support import DATA

from alert_service.config import build_config
from alert_service.match import RuleSet
from alert_service.parse import parse_line
from alert_service.parse.values import decode_osquery_escapes

BASE: dict[str, Any] = {
    "name": "pack_tracked_connections_tracked_connections",
    "hostIdentifier": "web-01",
    "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
    "unixTime": 1756796709,
    "epoch": 0,
    "counter": 3,
    "action": "added",
}


def line(**columns: str) -> bytes:
    doc = {**BASE, "columns": {"remote_port": "443", "remote_address": "192.0.2.1", **columns}}
    return json.dumps(doc, separators=(",", ":")).encode()


def test_decode_rules() -> None:
    assert decode_osquery_escapes("/srv/na\\xC3\\xAFve/bin/agent") == "/srv/naïve/bin/agent"
    assert decode_osquery_escapes("sh -c \\x0Aid\\x09x") == "sh -c \nid\tx"
    # invalid UTF-8 bytes become U+FFFD, one per byte
    assert decode_osquery_escapes("/tmp/\\xFF\\xFEx") == "/tmp/\ufffd\ufffdx"
    # osquery writes uppercase hex only: anything else is text as typed
    assert decode_osquery_escapes("C:\\xyz \\xab \\x4") == "C:\\xyz \\xab \\x4"
    # a NUL byte cannot be passed on as text to programs: U+FFFD
    assert decode_osquery_escapes("a\\x00b") == "a\ufffdb"
    assert decode_osquery_escapes("plain") == "plain"


def test_escaped_columns_are_decoded_and_the_logged_form_kept() -> None:
    (event,) = parse_line(line(path="/srv/na\\xC3\\xAFve/bin/agent", name="agent"))
    assert event.columns["path"] == "/srv/naïve/bin/agent"
    assert event.columns["name"] == "agent"
    assert event.logged == {"path": "/srv/na\\xC3\\xAFve/bin/agent"}
    (plain,) = parse_line(line(path="/usr/bin/curl"))
    assert plain.logged == {}


def test_every_text_column_and_every_form_is_decoded() -> None:
    control, old_utf8, raw_utf8 = (
        parse_line(x)[0] for x in (DATA / "escapes.jsonl").read_bytes().splitlines()
    )
    assert control.columns["cmdline"] == "sh -c \nid\tx"
    assert old_utf8.columns["path"] == "/tmp/été/nc"
    assert raw_utf8.columns["path"] == "/tmp/été/nc"
    # batch form, and invalid raw UTF-8 in a snapshot (never escaped by osquery)
    batch = {**BASE, "diffResults": {"added": [{"username": "zo\\xC3\\xAB"}], "removed": []}}
    del batch["action"]
    (row,) = parse_line(json.dumps(batch))
    assert row.columns["username"] == "zoë"
    snapshot = (
        b'{"name":"q","hostIdentifier":"h","unixTime":1,"snapshot":'
        b'[{"path":"/tmp/\xff\xfex","pid":"1"}],"action":"snapshot"}'
    )
    (snap,) = parse_line(snapshot)
    assert snap.columns["path"] == "/tmp/\ufffd\ufffdx"


def test_a_rule_written_as_people_write_it_matches(tmp_path: Path) -> None:
    config = build_config(
        {
            "sources": [{"path": str(tmp_path / "log")}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            "rules": [
                {
                    "name": "naive",
                    "notify": ["hook"],
                    "process": {"path": {"glob": ["/srv/naïve/bin/*"]}},
                }
            ],
        }
    )
    (event,) = parse_line(line(path="/srv/na\\xC3\\xAFve/bin/agent"))
    (alert,) = RuleSet(config.rules).match(event)
    payload = alert.as_dict()
    assert payload["connection"]["path"] == "/srv/naïve/bin/agent"
    assert payload["logged"] == {"path": "/srv/na\\xC3\\xAFve/bin/agent"}


def test_replay_prints_the_decoded_text_and_the_logged_form(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(line(path="/srv/na\\xC3\\xAFve/bin/agent") + b"\n")
    cfg = tmp_path / "alerts.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": [{"path": str(log), "start_at": "beginning"}],
                "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
                "rules": [
                    {
                        "name": "naive",
                        "notify": ["hook"],
                        "process": {"path": {"exact": ["/srv/naïve/bin/agent"]}},
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "alert_service", "replay", "--config", str(cfg), str(log)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (alert,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert alert["connection"]["path"] == "/srv/naïve/bin/agent"
    assert alert["logged"]["path"] == "/srv/na\\xC3\\xAFve/bin/agent"


def test_a_backslash_written_as_a_unicode_escape_is_decoded_too() -> None:
    text = line(path="PLACEHOLDER").replace(b"PLACEHOLDER", b"/srv/na\\u005cxC3\\u005CxAFve")
    (event,) = parse_line(text)
    assert event.columns["path"] == "/srv/naïve"
