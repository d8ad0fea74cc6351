"""Packs, differential logging and the scheduler, with a real SDK extension."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from standin_helpers import FIXED_TIME, Clock, FakeExtension, wait_until

from osqueryd_standin import Standin

DISCOVERY = "SELECT 1 FROM osquery_registry WHERE registry = 'table' AND name = 'fake_table'"
CAL = "Tue Sep  2 07:05:09 2025 UTC"


def pack(query: str, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"query": query, "interval": 3600}
    spec.update(options)
    return {"platform": "linux", "discovery": [DISCOVERY], "queries": {"tracked": spec}}


def head(counter: int, unix_time: int = FIXED_TIME, cal: str = CAL) -> str:
    return (
        '{"name":"pack_netmon_tracked","hostIdentifier":"web-01","calendarTime":"' + cal + '",'
        f'"unixTime":{unix_time},"epoch":0,"counter":{counter},"numerics":false,'
    )


def started(
    workdir: Path, make_standin: Callable[..., Standin], **kwargs: Any
) -> tuple[Standin, FakeExtension]:
    osqd = make_standin(**kwargs)
    ext = FakeExtension(workdir)
    ext.launch(osqd)
    return osqd, ext


def test_differential_log_bytes_and_counters(
    workdir: Path, make_standin: Callable[..., Standin], clock: Clock
) -> None:
    osqd, ext = started(workdir, make_standin)
    log = osqd.results_log_path
    assert log.read_bytes() == b""
    osqd.add_pack("netmon", pack("SELECT id, port FROM fake_table"))
    ext.set_rows([{"id": "b", "port": "2"}, {"id": "a", "port": "1"}])

    osqd.run_scheduled_once("pack_netmon_tracked")
    first = (
        head(0)
        + '"columns":{"id":"b","port":"2"},"action":"added"}\n'
        + head(0)
        + '"columns":{"id":"a","port":"1"},"action":"added"}\n'
    )
    assert log.read_text(encoding="utf-8") == first

    clock.now = FIXED_TIME + 2
    osqd.run_scheduled_once("tracked")  # no change: nothing logged
    assert log.read_text(encoding="utf-8") == first

    clock.now = FIXED_TIME + 4
    ext.set_rows([{"id": "c", "port": "3"}, {"id": "b", "port": "2"}, {"id": "z", "port": "0"}])
    osqd.run_scheduled_once()
    t = FIXED_TIME + 4
    cal = "Tue Sep  2 07:05:13 2025 UTC"
    second = (
        head(1, t, cal)
        + '"columns":{"id":"a","port":"1"},"action":"removed"}\n'
        + head(1, t, cal)
        + '"columns":{"id":"c","port":"3"},"action":"added"}\n'
        + head(1, t, cal)
        + '"columns":{"id":"z","port":"0"},"action":"added"}\n'
    )
    assert log.read_text(encoding="utf-8") == first + second


def test_removed_false_hides_removals_but_bumps_counter(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd, ext = started(workdir, make_standin)
    osqd.add_pack("netmon", pack("SELECT id FROM fake_table", removed=False))
    ext.set_rows([{"id": "a"}, {"id": "b"}])
    osqd.run_scheduled_once()
    ext.set_rows([{"id": "a"}])
    osqd.run_scheduled_once()  # only a removal: nothing logged, counter 1
    ext.set_rows([{"id": "a"}, {"id": "c"}])
    osqd.run_scheduled_once()
    lines = [json.loads(x) for x in osqd.results_log_path.read_text().splitlines()]
    assert [(x["counter"], x["action"], x["columns"]["id"]) for x in lines] == [
        (0, "added", "a"),
        (0, "added", "b"),
        (2, "added", "c"),
    ]


def test_batch_format(workdir: Path, make_standin: Callable[..., Standin]) -> None:
    osqd, ext = started(workdir, make_standin, logger_event_type=False)
    osqd.add_pack("netmon", pack("SELECT id FROM fake_table"))
    osqd.run_scheduled_once()  # first run, no rows: an empty batch line
    ext.set_rows([{"id": "a"}])
    osqd.run_scheduled_once()
    osqd.run_scheduled_once()
    tail = f'"name":"pack_netmon_tracked","hostIdentifier":"web-01","calendarTime":"{CAL}",'
    tail += f'"unixTime":{FIXED_TIME},"epoch":0,'
    assert osqd.results_log_path.read_text().splitlines() == [
        '{"diffResults":{"removed":[],"added":[]},' + tail + '"counter":0,"numerics":false}',
        '{"diffResults":{"removed":[],"added":[{"id":"a"}]},'
        + tail
        + '"counter":1,"numerics":false}',
    ]


def test_escaping_differential_but_not_snapshot(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd, ext = started(workdir, make_standin)
    ext.set_rows([{"id": "a\nb\u00e9\x1f", "note": 'q"\\'}])
    osqd.add_pack("netmon", pack("SELECT id, note FROM fake_table"))
    osqd.add_pack(
        "snap",
        {"queries": {"all": {"query": "SELECT id FROM fake_table", "snapshot": True}}},
    )
    osqd.run_scheduled_once()
    line = osqd.results_log_path.read_bytes().decode("utf-8")
    assert '"columns":{"id":"a\\\\x0Ab\u00e9\\\\x1F","note":"q\\"\\\\"}' in line
    snapshot = osqd.snapshots_log_path.read_text(encoding="utf-8")
    assert snapshot == (
        '{"snapshot":[{"id":"a\\nb\u00e9\\u001F"}],"action":"snapshot",'
        '"name":"pack_snap_all","hostIdentifier":"web-01","calendarTime":"' + CAL + '",'
        f'"unixTime":{FIXED_TIME},"epoch":0,"counter":0,"numerics":false}}\n'
    )


def test_discovery_failure_skips_pack(workdir: Path, make_standin: Callable[..., Standin]) -> None:
    osqd, ext = started(workdir, make_standin)
    ext.set_rows([{"id": "a"}])
    skipped = osqd.add_pack(
        "absent",
        {
            "discovery": ["SELECT 1 FROM osquery_registry WHERE name = 'no_such_table'"],
            "queries": {"q": {"query": "SELECT id FROM fake_table", "interval": 10}},
        },
    )
    wrong_os = osqd.add_pack(
        "windows", {"platform": "windows", "queries": {"q": {"query": "SELECT 1"}}}
    )
    osqd.run_scheduled_once()
    assert osqd.results_log_path.read_bytes() == b""
    assert not skipped.active
    assert not wrong_os.valid


def test_scheduler_thread_runs_aligned_queries(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd, ext = started(workdir, make_standin, run_scheduler=True, clock=time.time)
    ext.set_rows([{"id": "a"}])
    osqd.add_pack("netmon", pack("SELECT id FROM fake_table", interval=1))
    assert wait_until(lambda: osqd.results_log_path.stat().st_size > 0, timeout_secs=5)
    line = json.loads(osqd.results_log_path.read_text().splitlines()[0])
    assert (line["name"], line["counter"], line["columns"]) == (
        "pack_netmon_tracked",
        0,
        {"id": "a"},
    )
