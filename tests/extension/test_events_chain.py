"""Kernel events through the whole chain: the osqueryd stand-in launches the extension,
runs the pack every 2 s, differential, and every short connection is logged once,
``added``, with its owner; without privileges the extension samples as before and
says why."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from extension.collect.linux_events import EventsUnavailableError, LinuxEventSource
from tests.helpers.flows import (
    Server,
    closed_ports,
    forked_connects,
    refused,
    tcp_short,
    udp_short,
)
from tests.helpers.osqueryd import narrowed_pack, short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for


def _events_available() -> None:
    source = LinuxEventSource()
    try:
        source.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here: {err}")
    finally:
        source.stop()


def _logged(results_log: Path) -> list[tuple[str, dict[str, str]]]:
    if not results_log.exists():
        return []
    lines = [json.loads(raw) for raw in results_log.read_text(encoding="utf-8").splitlines()]
    return [(line["action"], line["columns"]) for line in lines]


def test_every_short_connection_is_logged_once_with_its_owner() -> None:
    _events_available()
    with (
        short_tmpdir() as workdir,
        standin_with_extension(workdir, run_scheduler=True) as osqd,
        Server("tc_chain_srv") as server,
        closed_ports(5) as ports,
    ):
        # The shipped pack, narrowed to this test's ports: the host may be busy.
        ours = ", ".join(str(p) for p in [server.port, *ports])
        osqd.add_pack("tracked_connections", narrowed_pack(
            f"remote_port IN ({ours}) OR local_port = {server.port}"))  # fmt: skip
        outbound = tcp_short(server.port, 10)
        failed = refused(ports)
        datagrams = udp_short(server.port, 5)
        children = forked_connects(server.port, 5, "tc_chain_kid")
        expected = {
            (str(a.protocol), str(a.local_port), str(a.remote_port), str(a.pid), a.name)
            for a in outbound + datagrams + children
        } | {
            ("6", str(server.port), str(a.local_port), str(server.pid), server.name)
            for a in outbound + children
        }

        def added() -> set[tuple[str, ...]]:
            return {
                (c.get("protocol", ""), c.get("local_port", ""), c.get("remote_port", ""),
                 c.get("pid", ""), c.get("name", ""))
                for action, c in _logged(osqd.results_log_path)
                if action == "added"
            }  # fmt: skip

        wait_for(lambda: expected <= added(), timeout_secs=60, interval_secs=0.5)
        refused_rows = [
            c for action, c in _logged(osqd.results_log_path)
            if action == "added" and c.get("remote_port") in {str(p) for p in ports}
            and c.get("pid") == str(failed[0].pid)
        ]  # fmt: skip
        assert sorted(c["status"] for c in refused_rows) == ["refused"] * 5
        # Each one is logged once as added and, after it lingered, once as removed.
        expected_keys = {key[:3] for key in expected}
        wait_for(
            lambda: sum(
                1 for action, c in _logged(osqd.results_log_path)
                if action == "removed"
                and (c.get("protocol"), c.get("local_port"), c.get("remote_port")) in expected_keys
            ) >= len(expected_keys),
            timeout_secs=60,
            interval_secs=0.5,
        )  # fmt: skip
        counts: dict[tuple[str, str, str], list[str]] = {}
        for action, c in _logged(osqd.results_log_path):
            key = (c.get("protocol", ""), c.get("local_port", ""), c.get("remote_port", ""))
            if key in expected_keys:
                counts.setdefault(key, []).append(action)
        assert all(sorted(v) == ["added", "removed"] for v in counts.values()), counts


def test_without_privileges_the_extension_samples_and_says_why() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv (util-linux) is not installed")
    _events_available()  # root here, so dropping capabilities is what turns events off
    assert setpriv is not None
    drop = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]
    with (
        short_tmpdir() as workdir,
        standin_with_extension(workdir, "--events", "auto", launcher=drop) as osqd,
    ):
        (stats,) = osqd.query(
            "SELECT source, events_off_reason, events_read FROM tracked_connections_stats"
        )
        assert stats["source"] == "sampling" and stats["events_read"] == "0"
        assert "CAP_PERFMON" in stats["events_off_reason"] or "mount" in stats[
            "events_off_reason"], stats  # fmt: skip
        with Server("tc_nopriv_srv") as server:
            client = socket.create_connection(("127.0.0.1", server.port))
            local_port = client.getsockname()[1]
            try:
                wait_for(lambda: any(
                    r.get("local_port") == str(local_port)
                    for r in osqd.query("SELECT local_port FROM tracked_connections")
                ))  # fmt: skip
            finally:
                client.close()


def test_events_on_refuses_to_start_without_them() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv (util-linux) is not installed")
    assert setpriv is not None
    started = time.monotonic()
    run = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--",
         sys.executable, "-m", "extension", "--events", "on", "--socket", "/nonexistent/em"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert "kernel events unavailable (--events on)" in run.stderr
    assert time.monotonic() - started < 20
