"""Hostile result lines are read, not dropped: oversized texts, lone surrogates, NUL.

* A line longer than ``max_line_bytes`` has its long texts cut (``…[cut N bytes]``)
  and is read; in the batch form, the other rows of the line keep their alerts.
* A lone surrogate escape (``\\ud800``) becomes U+FFFD; the line is read.
* A ``\\u0000`` becomes the text ``\\x00`` at the parse boundary, so a ``command``
  action gets an argument it can pass to ``exec``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from alerts_support import REPO_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.match import Alert, alert_id
from alert_service.notify.command import CommandNotifier
from alert_service.parse import parse_line
from alert_service.source import FileFollower, LineSplitter
from alert_service.source.longlines import StringCutter
from alert_service.stats import Stats

MIB = 1024 * 1024


def _row(**columns: str) -> dict[str, str]:
    row = {
        "pid": "812",
        "name": "curl",
        "path": "/usr/bin/curl",
        "cmdline": "curl http://198.51.100.7/",
        "remote_address": "198.51.100.7",
        "remote_port": "4444",
        "local_address": "10.0.0.5",
        "local_port": "40001",
        "protocol": "6",
        "family": "2",
        "direction": "outbound",
    }
    row.update(columns)
    return row


def _line(**doc: Any) -> bytes:
    base: dict[str, Any] = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": "web-01",
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709,
        "epoch": 0,
        "counter": 5,
        "numerics": False,
    }
    base.update(doc)
    return json.dumps(base, ensure_ascii=False).encode()


def _batch_with_a_huge_row() -> bytes:
    # argv[0] of 130,000 control bytes, logged by osquery as \xNN: 520,000 characters
    # in name and parent_name (1.3 MB with the command line), beside an ordinary row.
    huge = "\\x01" * 130_000
    return _line(
        diffResults={
            "removed": [],
            "added": [
                _row(name=huge, parent_name=huge, cmdline=huge[:300_000], remote_port="4444"),
                _row(name="nc", remote_port="6667"),
            ],
        }
    )


def test_a_batch_line_over_the_limit_keeps_every_row(tmp_path: Path) -> None:
    line = _batch_with_a_huge_row()
    assert len(line) > MIB
    log = tmp_path / "results.log"
    log.write_bytes(
        b'{"not": "a result"}\n' + line + b"\n" + _line(columns=_row(), action="added") + b"\n"
    )
    stats = Stats()
    with FileFollower(str(log), start_at="beginning", max_line_bytes=MIB, stats=stats) as follower:
        chunks = follower.poll_chunks()
        position = follower.position()
    lines = [source_line for chunk in chunks for source_line in chunk.source_lines()]
    assert len(lines) == 3
    events = parse_line(lines[1].line)
    assert [e.columns["remote_port"] for e in events] == [4444, 6667]
    big, ordinary = events
    assert ordinary.columns["name"] == "nc"
    name = str(big.columns["name"])
    # osquery's \xNN escapes are decoded for matching (the cut keeps whole escapes).
    assert name.startswith("\x01\x01") and name.endswith(" bytes]")
    assert "…[cut " in name and len(name) < 70_000
    assert stats.lines_cut == 1 and stats.lines_skipped_too_long == 0
    # The checkpoint is the end of the file: the cut line was consumed whole.
    assert position is not None and position.offset == log.stat().st_size
    # Offsets of the lines after the cut one are right.
    assert lines[2].start == len(b'{"not": "a result"}\n') + len(line) + 1


def test_a_line_still_too_long_after_the_cut_is_skipped_alone() -> None:
    many_short = _line(snapshot=[_row(cmdline=f"c{i}") for i in range(20_000)], action="snapshot")
    ok = _line(columns=_row(), action="added")
    skipped: list[int] = []
    splitter = LineSplitter(max_line_bytes=MIB, on_too_long=skipped.append)
    data = many_short + b"\n" + ok + b"\n"
    out = [
        line for i in range(0, len(data), 65536) for line, _ in splitter.feed(data[i : i + 65536])
    ]
    assert out == [ok]
    assert skipped == [0]


def test_replay_alerts_on_every_row_of_an_oversized_batch_line(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    # Another process than the batch's first row, so dedup (per pid and peer) keeps both.
    event = _line(
        columns=_row(name="n" * 1_200_000, remote_port="4444", pid="813"),
        action="added",
    )
    log.write_bytes(_batch_with_a_huge_row() + b"\n" + event + b"\n")
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
sources: [{{path: {log}, max_line_bytes: {MIB}}}]
notifiers: [{{name: local, type: webhook, url: "http://127.0.0.1:9/x"}}]
rules:
  - {{name: shell, notify: [local], remote_port: [4444]}}
  - {{name: irc, notify: [local], remote_port: [6667]}}
""",
        encoding="utf-8",
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "alert_service", "replay", "--config", str(config), str(log)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(a["rule"], a["connection"]["remote_port"]) for a in alerts] == [
        ("shell", 4444),
        ("irc", 6667),
        ("shell", 4444),
    ]
    assert alerts[2]["connection"]["name"].endswith(" bytes]")
    logs = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["event"] for e in logs].count("source_line_cut") == 2


# -- the cutter on its own -------------------------------------------------------------

_TEXT = st.text(
    alphabet=st.sampled_from(["a", "é", '"', "\\", "\x01", "🐍", "\u2028", "z"]), max_size=400
)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(_TEXT, min_size=1, max_size=6),
    chunk=st.integers(min_value=1, max_value=97),
    limit=st.integers(min_value=16, max_value=120),
    ascii_only=st.booleans(),
)
def test_cut_lines_are_the_same_json_with_shorter_texts(
    values: list[str], chunk: int, limit: int, ascii_only: bool
) -> None:
    doc: dict[str, Any] = {f"k{i}": v for i, v in enumerate(values)}
    doc["nested"] = [1, {"x": values[0]}, None]
    text = json.dumps(doc, ensure_ascii=ascii_only).encode()
    cutter = StringCutter(limit, 10 * len(text) + 100)
    for i in range(0, len(text), chunk):
        cutter.feed(text[i : i + chunk])
    out = cutter.finish()
    assert out is not None
    got = json.loads(out)
    assert got["nested"][0] == 1 and got["nested"][2] is None
    for key, value in doc.items():
        if not isinstance(value, str):
            continue
        logged = json.dumps(value, ensure_ascii=ascii_only)[1:-1].encode()
        if len(logged) <= limit:
            assert got[key] == value
        else:
            # A prefix of the value (never half an escape, character or pair), then
            # the marker counting the logged bytes left out.
            kept, _, marker = got[key].rpartition("…[cut ")
            assert value.startswith(kept)
            left_out = int(marker.removesuffix(" bytes]"))
            assert left_out == len(logged) - len(
                json.dumps(kept, ensure_ascii=ascii_only)[1:-1].encode()
            )


# -- invalid Unicode and NUL -------------------------------------------------------------


def test_a_lone_surrogate_is_read_as_a_replacement_character() -> None:
    line = (
        b'{"name":"pack_tracked_connections_tracked_connections","hostIdentifier":"web-01",'
        b'"unixTime":1756796709,"action":"added","decorations":{"hostname":"h\\udfff"},'
        b'"columns":{"name":"nc\\ud800","cmdline":"a\\ud83d\\ude00b\\ud800","pid":"7"}}'
    )
    (event,) = parse_line(line)
    assert event.columns["name"] == "nc\ufffd"
    assert event.columns["cmdline"] == "a\U0001f600b\ufffd"  # a valid pair stays whole
    assert event.decorations["hostname"] == "h\ufffd"
    json.dumps(Alert(alert_id(event), "r", (), event).as_dict(), ensure_ascii=False).encode()


def test_a_nul_never_reaches_a_command(tmp_path: Path) -> None:
    line = _line(columns=_row(cmdline="sh -c x\u0000--evil", name="n\u0000"), action="added")
    assert b"\\u0000" in line
    (event,) = parse_line(line)
    # The \u0000 is written as osquery's \x00, which decoding turns into U+FFFD.
    assert event.columns["cmdline"] == "sh -c x\ufffd--evil"
    assert "\x00" not in str(event.columns["name"])
    out = tmp_path / "argv.json"
    action = CommandNotifier.from_config(
        "cmd",
        {
            "command": [
                sys.executable,
                "-c",
                "import json, sys; json.dump(sys.argv[1:], open(sys.argv[1], 'w'))",
                str(out),
                "{cmdline}",
            ]
        },
    )
    alert = Alert(alert_id(event), "r", ("cmd",), event)
    action.notify(alert)
    assert json.loads(out.read_text()) == [str(out), "sh -c x\ufffd--evil"]
    # A row queued before the parser did this (a NUL in the stored payload) runs too.
    stored = alert.as_dict()
    stored["connection"]["cmdline"] = "old\x00row"
    action.send({"alert": stored}, idempotency_key="k")
    assert json.loads(out.read_text()) == [str(out), "old\\x00row"]
