"""Owners of real sockets held by real child processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from extension.collect import PsutilCollector, select_collector
from extension.enrich.process import MAX_CMDLINE_CHARS, TRUNCATION_MARKER, ProcessTracker
from extension.sampler import Sampler
from extension.serve.table import TrackedConnectionsTable
from tests.helpers.procs import finish, spawn_connector


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server


def _rows(sampler: Sampler) -> list[dict[str, str]]:
    sampler.sample_once()
    return TrackedConnectionsTable(sampler).generate({})


def _outbound_from(rows: list[dict[str, str]], local_port: int, remote_port: int) -> dict[str, str]:
    (row,) = [r for r in rows if r.get("local_port") == str(local_port)
              and r.get("remote_port") == str(remote_port)]  # fmt: skip
    assert row["direction"] == "outbound"
    return row


@pytest.mark.parametrize("collector_name", ["selected", "psutil"])
def test_connection_keeps_owner_after_the_process_exits(
    listener: socket.socket, collector_name: str
) -> None:
    collector = select_collector() if collector_name == "selected" else PsutilCollector()
    sampler = Sampler(collector, linger_secs=30)
    port = listener.getsockname()[1]
    child, local_port = spawn_connector(port)
    accepted, _ = listener.accept()
    try:
        seen = _outbound_from(_rows(sampler), local_port, port)
        finish(child)
        accepted.close()
        after = _outbound_from(_rows(sampler), local_port, port)
    finally:
        accepted.close()
    assert seen["pid"] == str(child.pid)
    assert seen["name"] == psutil.Process().name()
    assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == "zombie"
    for column in ("pid", "name", "path", "cmdline", "username", "start_time", "first_seen"):
        assert after[column] == seen[column]


def test_tracker_remembers_an_exited_process() -> None:
    tracker = ProcessTracker()
    child = subprocess.Popen(["sleep", "30"])
    try:
        tracker.refresh()
    finally:
        child.kill()
        child.wait()
    tracker.refresh()
    info = tracker.lookup(child.pid)
    assert info.name == "sleep"
    assert info.cmdline == "sleep 30"
    assert info.parent == os.getpid()
    assert tracker.exited_count >= 1


def test_non_utf8_argv_gives_valid_text_and_keeps_the_row(listener: socket.socket) -> None:
    sampler = Sampler(select_collector())
    port = listener.getsockname()[1]
    child, local_port = spawn_connector(port, b"bad-\xff\xfe-arg", "ok")
    try:
        row = _outbound_from(_rows(sampler), local_port, port)
    finally:
        finish(child)
    assert row["cmdline"].endswith("bad-\ufffd\ufffd-arg ok")
    row["cmdline"].encode("utf-8")  # strict: must not raise


def test_very_long_cmdline_is_capped_with_a_marker(listener: socket.socket) -> None:
    sampler = Sampler(select_collector())
    port = listener.getsockname()[1]
    child, local_port = spawn_connector(port, "x" * 20_000)
    try:
        row = _outbound_from(_rows(sampler), local_port, port)
    finally:
        finish(child)
    assert len(row["cmdline"]) == MAX_CMDLINE_CHARS
    assert row["cmdline"].endswith(TRUNCATION_MARKER)


def test_shared_listener_has_one_row_owned_by_the_parent() -> None:
    # psutil itself reports a shared socket under one arbitrary holder, so this
    # rule is only kept by the /proc collector on Linux.
    collector = select_collector()
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    # The child inherits the listening socket (as a preforking worker would).
    code = "import sys, socket; s = socket.socket(fileno=int(sys.argv[1])); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code, str(server.fileno())],
                             stdin=subprocess.PIPE, pass_fds=[server.fileno()])  # fmt: skip
    try:
        owners = set()
        for _ in range(3):
            rows = [r for r in _rows(Sampler(collector)) if r.get("local_port") == str(port)]
            assert len(rows) == 1
            owners.add(rows[0]["pid"])
        assert owners == {str(os.getpid())}
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
        server.close()


def test_a_process_that_execs_before_connecting_is_reported_as_the_new_program(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    connect = (
        "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
        " print(s.getsockname()[1], flush=True); sys.stdin.read()"
    )
    # A harmless-looking shell, seen by a sample, then exec'ing into the program
    # that connects: same pid, same start time.
    script = f'read go; exec -a ncat {sys.executable} -c "{connect}" {port}'
    child = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    sampler = Sampler(select_collector())
    try:
        sampler.sample_once()
        assert sampler.stats().processes_cached > 0
        child.stdin.write(b"go\n")
        child.stdin.flush()
        local_port = int(child.stdout.readline())
        row = _outbound_from(_rows(sampler), local_port, port)
    finally:
        finish(child)
    assert row["pid"] == str(child.pid)
    assert row["path"] == psutil.Process().exe()
    assert row["cmdline"].startswith("ncat -c ")
    assert "bash" not in row["name"]
