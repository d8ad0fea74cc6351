"""The extension as a subprocess, talking osquery's Thrift protocol to the stand-in."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from extension.columns import COLUMNS
from extension.serve.server import _Handler
from osqueryd_standin import Standin
from tests.helpers.osqueryd import EXTENSION_CMD, PACK, short_tmpdir, standin_with_extension
from tests.helpers.procs import finish, spawn_connector, wait_for
from tests.helpers.sockets import close_with_reset, own_net_namespace, socket_inode


@pytest.fixture(scope="module")
def osqd() -> Iterator[Standin]:
    with short_tmpdir() as workdir, standin_with_extension(
        workdir, "--sample-interval-ms", "100", "--linger-secs", "2"
    ) as standin:
        yield standin


def test_registers_both_tables_with_the_contract_columns(osqd: Standin) -> None:
    assert "tracked_connections" in osqd.extensions().values()
    columns = osqd.query_columns("SELECT * FROM tracked_connections")
    assert columns == [(c.name, c.type) for c in COLUMNS]
    (stats,) = osqd.query("SELECT * FROM tracked_connections_stats")
    assert int(stats["samples_taken"]) >= 1
    assert stats["sample_interval_ms"] == "100"
    assert stats["last_error"] == ""


def test_own_connection_shows_with_our_pid_and_name(osqd: Standin) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client_port = client.getsockname()[1]
            sql = (
                "SELECT pid, name, path, family, protocol, remote_address, direction, state"
                f" FROM tracked_connections WHERE socket = {socket_inode(client)}"
                f" AND net_namespace = {own_net_namespace()}"
                f" AND local_port = {client_port} AND remote_port = {port}"
            )
            wait_for(lambda: bool(osqd.query(sql)), timeout_secs=10)
            (row,) = osqd.query(sql)
    me = psutil.Process()
    assert row == {
        "pid": str(os.getpid()),
        "name": me.name(),
        "path": me.exe(),
        "family": "2",
        "protocol": "6",
        "remote_address": "127.0.0.1",
        "direction": "outbound",
        "state": "ESTABLISHED",
    }


def test_non_utf8_cmdline_crosses_thrift_as_valid_text(osqd: Standin) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        child, local_port = spawn_connector(port, b"\xff\xfe-evil")
        try:
            # the child's socket: its pid, our namespace and the 4-tuple (ports
            # alone repeat on a busy host, in other processes and namespaces)
            sql = (
                "SELECT pid, cmdline FROM tracked_connections"
                f" WHERE pid = {child.pid} AND net_namespace = {own_net_namespace()}"
                f" AND local_port = {local_port} AND remote_port = {port}"
            )
            wait_for(lambda: bool(osqd.query(sql)), timeout_secs=10)
            (row,) = osqd.query(sql)
        finally:
            finish(child)
    assert row["pid"] == str(child.pid)
    assert row["cmdline"].endswith("\ufffd\ufffd-evil")


def test_differential_pack_logs_added_then_removed(osqd: Standin) -> None:
    osqd.add_pack("tracked_connections", PACK)
    osqd.run_scheduled_once()  # the baseline run, counter 0
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        client_port = client.getsockname()[1]
        inode = socket_inode(client)
        accepted, _ = server.accept()
        listed = f"SELECT 1 FROM tracked_connections WHERE socket = {inode}"
        wait_for(lambda: bool(osqd.query(listed)), timeout_secs=30)  # sampled
        osqd.run_scheduled_once()
        # RST: no FIN_WAIT2/TIME_WAIT entry keeps the 5-tuple. Once, in a full-suite
        # run, a FIN-closed connection's row here outlived the 2 s linger by more than
        # 30 s; not reproduced alone, it is not what this test is about.
        close_with_reset([client, accepted])
    # gone once the 2 s linger of this fixture has passed (later on a busy host)
    wait_for(lambda: not osqd.query(listed), timeout_secs=30, interval_secs=0.2)
    osqd.run_scheduled_once()
    osqd.remove_pack("tracked_connections")

    lines = [json.loads(x) for x in osqd.results_log_path.read_text().splitlines()]
    mine = [
        line
        for line in lines
        if line["columns"].get("socket") == str(inode)
        and line["columns"].get("net_namespace") == str(own_net_namespace())
    ]
    assert [line["action"] for line in mine] == ["added", "removed"]
    added, removed = mine
    assert added["columns"] == removed["columns"]
    assert added["name"] == "pack_tracked_connections_tracked_connections"
    assert added["hostIdentifier"] == "test-host"
    assert added["columns"]["pid"] == str(os.getpid())
    assert added["columns"]["direction"] == "outbound"
    assert (added["columns"]["local_port"], added["columns"]["remote_port"]) == (
        str(client_port),
        str(port),
    )
    assert removed["counter"] > added["counter"] > 0
    assert "state" not in added["columns"] and "last_seen" not in added["columns"]


def test_shutdown_makes_the_extension_exit_zero() -> None:
    with short_tmpdir() as workdir:
        with standin_with_extension(workdir) as standin:
            (child,) = standin.children
        assert child.wait(timeout=10) == 0


def test_extension_exits_nonzero_when_osqueryd_goes_away() -> None:
    with short_tmpdir() as workdir:
        socket_path = str(workdir / "osquery.em")
        cmd = [
            sys.executable, "-m", "osqueryd_standin",
            "--extensions_socket", socket_path,
            "--logger_path", str(workdir / "logs"),
            "--ephemeral",
        ]  # fmt: skip
        standin = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        ext = None
        try:
            wait_for(lambda: Path(socket_path).exists(), timeout_secs=15)
            # Launched the way osqueryd launches it, but as our child to read its status.
            ext = subprocess.Popen(
                [*EXTENSION_CMD, "--socket", socket_path, "--timeout", "3", "--interval", "1"],
                stderr=subprocess.PIPE,
            )
            wait_for(lambda: any(p.name.startswith("osquery.em.") for p in workdir.iterdir()),
                     timeout_secs=15)  # fmt: skip
            os.kill(standin.pid, signal.SIGKILL)
            standin.wait()
            gone_at = time.monotonic()
            assert ext.wait(timeout=10) == 1
            # The contract is "within 2 x interval" (2 s here); 0.5 s more covers
            # process exit and scheduling on a loaded 2-core CI machine.
            assert time.monotonic() - gone_at < 2.5
            assert ext.stderr is not None
            assert b"osqueryd has gone away" in ext.stderr.read()
        finally:
            for proc in (standin, ext):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if ext is not None and ext.stderr is not None:
                ext.stderr.close()


def test_extension_survives_a_stalled_osqueryd_then_exits_when_it_is_gone() -> None:
    with short_tmpdir() as workdir:
        socket_path = str(workdir / "osquery.em")
        cmd = [
            sys.executable, "-m", "osqueryd_standin",
            "--extensions_socket", socket_path,
            "--logger_path", str(workdir / "logs"),
            "--ephemeral",
        ]  # fmt: skip
        standin = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        ext = None
        try:
            wait_for(lambda: Path(socket_path).exists(), timeout_secs=15)
            ext = subprocess.Popen(
                [*EXTENSION_CMD, "--socket", socket_path, "--timeout", "3", "--interval", "1"],
                stderr=subprocess.PIPE,
            )
            wait_for(lambda: any(p.name.startswith("osquery.em.") for p in workdir.iterdir()),
                     timeout_secs=15)  # fmt: skip
            # A stall: osqueryd holds its socket but answers nothing for 3 intervals.
            os.kill(standin.pid, signal.SIGSTOP)
            time.sleep(3.0)
            os.kill(standin.pid, signal.SIGCONT)
            time.sleep(2.5)
            assert ext.poll() is None, "a stall of a few intervals is survived"
            os.kill(standin.pid, signal.SIGKILL)
            standin.wait()
            gone_at = time.monotonic()
            assert ext.wait(timeout=10) == 1
            assert time.monotonic() - gone_at < 2.5, "gone for real: out within 2 x interval"
        finally:
            for proc in (standin, ext):
                if proc is not None and proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGCONT)
                    proc.kill()
                    proc.wait()
            if ext is not None and ext.stderr is not None:
                ext.stderr.close()


class _Broken:
    name = "tracked_connections"

    def routes(self) -> list[dict[str, str]]:
        return []

    def generate(self, context: dict[str, object]) -> list[dict[str, str]]:
        raise OSError("cannot read /proc/net/tcp")


def test_generate_failure_is_an_error_status_not_an_empty_table() -> None:
    handler = _Handler([_Broken()], on_shutdown=lambda: None)
    response = handler.call("table", "tracked_connections", {"action": "generate"})
    assert response.status.code == 1
    assert "cannot read /proc/net/tcp" in response.status.message
    assert response.response == []
    unknown = handler.call("table", "nope", {"action": "generate"})
    assert unknown.status.code == 1


def test_refused_registration_is_reported_and_exits_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [*EXTENSION_CMD, "--socket", str(tmp_path / "missing.em"), "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot connect to osqueryd's extension socket" in result.stderr
    assert "no such file (is osqueryd running" in result.stderr


def test_a_socket_path_that_is_a_plain_file_is_named_as_such(tmp_path: Path) -> None:
    plain = tmp_path / "osquery.em"
    plain.write_text("")
    result = subprocess.run(
        [*EXTENSION_CMD, "--socket", str(plain), "--timeout", "0.5"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the file is not a socket" in result.stderr
