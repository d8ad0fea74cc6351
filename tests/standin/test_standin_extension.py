"""A real SDK extension, run as a subprocess, against the stand-in."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from osquery.extension_client import ExtensionClient
from standin_helpers import FakeExtension, wait_until

from osqueryd_standin import Standin, StandinQueryError


def test_launch_argv_env_and_registration(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd = make_standin(extensions_interval_secs=2, extensions_timeout_secs=3)
    ext = FakeExtension(workdir)
    child = ext.launch(osqd)
    start = next(r for r in ext.trace() if "start" in r)
    assert start["start"] == ["--socket", osqd.socket_path, "--timeout", "3", "--interval", "2"]
    assert start["pid"] == child.pid
    assert start["OSQUERY_EXTENSION"] == str(child.pid)
    assert list(osqd.extensions().values()) == ["fake_ext"]


def test_query_columns_generate_and_types(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd = make_standin()
    ext = FakeExtension(workdir)
    ext.set_rows(
        [
            {"id": "a", "port": "0x1F", "big": "9000000000", "ratio": "1.5", "note": "n"},
            {"id": "b", "port": "010", "big": "", "ratio": "1.5x", "extra": "ignored"},
            {"id": "c", "port": "12abc", "big": "-0x10", "ratio": " 2", "note": ""},
        ]
    )
    ext.launch(osqd)
    rows = osqd.query(
        "SELECT id, port, big, ratio, note, typeof(port) AS tp, typeof(big) AS tb,"
        " typeof(ratio) AS tr, typeof(note) AS tn FROM fake_table"
    )
    assert rows == [
        {"id": "a", "port": "31", "big": "9000000000", "ratio": "1.5", "note": "n",
         "tp": "integer", "tb": "integer", "tr": "real", "tn": "text"},
        {"id": "b", "port": "8", "big": "", "ratio": "", "note": "",
         "tp": "integer", "tb": "null", "tr": "null", "tn": "null"},
        {"id": "c", "port": "12", "big": "-16", "ratio": "2.0", "note": "",
         "tp": "integer", "tb": "integer", "tr": "real", "tn": "text"},
    ]  # fmt: skip
    before = len(ext.requests())
    assert osqd.query("SELECT id, port FROM fake_table WHERE port > 10") == [
        {"id": "a", "port": "31"},
        {"id": "c", "port": "12"},
    ]
    columns_req, generate_req = ext.requests()[before:]
    assert columns_req == {"action": "columns"}
    assert generate_req["action"] == "generate"
    assert generate_req["context"] == (
        '{"constraints":[{"name":"big","list":[],"affinity":"BIGINT"},'
        '{"name":"id","list":[],"affinity":"TEXT"},'
        '{"name":"note","list":[],"affinity":"TEXT"},'
        '{"name":"port","list":[],"affinity":"INTEGER"},'
        '{"name":"ratio","list":[],"affinity":"DOUBLE"}],'
        '"colsUsed":["id","port"],"colsUsedBitset":3}'
    )
    assert osqd.query_columns("SELECT id, big FROM fake_table") == [
        ("id", "TEXT"),
        ("big", "BIGINT"),
    ]


def test_extension_error_status_fails_the_query(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd = make_standin()
    ext = FakeExtension(workdir)
    ext.launch(osqd)
    ext.set_rows({"fail": "collector unavailable"})
    with pytest.raises(StandinQueryError, match=r"^collector unavailable$"):
        osqd.query("SELECT * FROM fake_table")
    client = ExtensionClient(path=osqd.socket_path)
    assert client.open(timeout=2)
    try:
        reply = client.extension_manager_client().query("SELECT * FROM fake_table")
    finally:
        client.close()
    assert (reply.status.code, reply.status.message) == (1, "collector unavailable")


def test_dead_extension_is_dropped(workdir: Path, make_standin: Callable[..., Standin]) -> None:
    osqd = make_standin(extensions_interval_secs=0.5)
    ext = FakeExtension(workdir)
    child = ext.launch(osqd)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=5)
    assert wait_until(lambda: not osqd.extensions(), timeout_secs=2.5)
    with pytest.raises(StandinQueryError, match="no such table: fake_table"):
        osqd.query("SELECT * FROM fake_table")


def test_stop_sends_shutdown_and_extension_exits_0(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd = make_standin()
    ext = FakeExtension(workdir)
    child = ext.launch(osqd)
    osqd.stop()
    assert child.returncode == 0
    assert not Path(osqd.socket_path).exists()


def test_second_instance_of_same_name_is_refused(
    workdir: Path, make_standin: Callable[..., Standin]
) -> None:
    osqd = make_standin()
    ext = FakeExtension(workdir)
    ext.launch(osqd)
    twin = FakeExtension(workdir, name="fake_ext", table="twin_table")
    twin.trace_path = workdir / "twin.trace.jsonl"
    child = osqd.launch_extension(twin.command(), extra_env=twin.env())
    # The SDK raises ExtensionException on a non-zero status: the process exits 1.
    assert child.wait(timeout=15) == 1
    assert list(osqd.extensions().values()) == ["fake_ext"]
    assert json.loads(twin.trace_path.read_text().splitlines()[0])["start"][0] == "--socket"
