"""Restarts of the extension and of osqueryd, with and without its database, while 50
connections stay open: osquery logs no change for them and no alert is sent again."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import yaml

from osqueryd_standin import Standin
from tests.helpers.osqueryd import EXTENSION_CMD, ROOT, narrowed_pack, short_tmpdir
from tests.helpers.procs import wait_for
from tests.helpers.receiver import webhook_receiver
from tests.helpers.sockets import close_with_reset, own_net_namespace, socket_inodes

HELD = 50


@contextmanager
def osqueryd(workdir: Path, database: str, port: int) -> Iterator[Standin]:
    """A stand-in with the given database, the extension and the pack, like osqueryd."""
    osqd = Standin(
        str(workdir / "osquery.em"),
        workdir / "logs",
        host_identifier="test-host",
        extensions_interval_secs=1,
        extensions_timeout_secs=5,
        database_path=str(workdir / database),
        run_scheduler=False,  # the test runs the pack itself, so it knows when it ran
        shutdown_grace_secs=3.0,
        kill_grace_secs=3.0,
    )
    osqd.start()
    try:
        launch(osqd, workdir)
        # our namespace: another one on a busy host may reuse the port number
        ns = own_net_namespace()
        where = f"net_namespace = {ns} AND (remote_port = {port} OR local_port = {port})"
        osqd.add_pack("tracked_connections", narrowed_pack(where))
        osqd.run_scheduled_once()
        yield osqd
    finally:
        osqd.stop()


def launch(osqd: Standin, workdir: Path) -> subprocess.Popen[bytes]:
    child = osqd.launch_extension(
        [*EXTENSION_CMD, "--state-file", str(workdir / "extension.state")]
    )
    osqd.wait_for_table("tracked_connections", 20)
    return child


def logged(osqd: Standin, inodes: set[str]) -> list[tuple[str, int, dict[str, str]]]:
    """(action, counter, columns) of every logged line about our held connections,
    found by socket inode and namespace (port numbers repeat on a busy host)."""
    own = str(own_net_namespace())
    if not osqd.results_log_path.exists():
        return []
    out = []
    for raw in osqd.results_log_path.read_text(encoding="utf-8").splitlines():
        line = json.loads(raw)
        columns = line["columns"]
        if columns.get("socket") in inodes and columns.get("net_namespace") == own:
            out.append((line["action"], int(line["counter"]), columns))
    return out


def outbox(workdir: Path) -> list[str]:
    """The id of every alert the service queued."""
    if not (workdir / "alerts" / "state.sqlite3").exists():
        return []
    with sqlite3.connect(workdir / "alerts" / "state.sqlite3") as db:
        return sorted(row[0] for row in db.execute("SELECT alert_id FROM outbox"))


def test_restarts_log_no_change_and_send_no_alert() -> None:
    with (
        short_tmpdir() as workdir,
        webhook_receiver() as receiver,
        socket.create_server(("127.0.0.1", 0), backlog=HELD) as server,
    ):
        port = server.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(HELD)]
        accepted = [server.accept()[0] for _ in range(HELD)]
        mine = {str(inode) for inode in socket_inodes(clients)}
        config = workdir / "alerts.yaml"
        config.write_text(yaml.safe_dump({
            "state_dir": str(workdir / "alerts"),
            "sources": [{"path": str(workdir / "logs" / "osqueryd.results.log"),
                         "start_at": "beginning"}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": receiver.url,
                           "timeout_secs": 5, "rate_limit_per_minute": 0,
                           "digest_threshold": 0}],
            "rules": [{"name": "held", "notify": ["hook"], "actions": ["added"],
                       "remote_port": [port]}],
        }), encoding="utf-8")  # fmt: skip
        service = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stderr=subprocess.PIPE,
        )
        try:
            with osqueryd(workdir, "osquery.db", port) as osqd:
                both_ends = mine | {str(inode) for inode in socket_inodes(accepted)}

                def logged_both() -> int:
                    osqd.run_scheduled_once()
                    return sum(1 for a, _, _ in logged(osqd, both_ends) if a == "added")

                wait_for(lambda: logged_both() >= 2 * HELD, timeout_secs=60, interval_secs=0.5)
                first = logged(osqd, both_ends)
                # One alert per connection is queued; deduplication sends one.
                wait_for(lambda: _service_caught_up(workdir) and len(outbox(workdir)) == HELD
                         and len(receiver.bodies()) == 1, timeout_secs=60)  # fmt: skip
                queued = outbox(workdir)

                def saved() -> int:
                    state = workdir / "extension.state"
                    if not state.exists():
                        return 0
                    rows = orjson.loads(state.read_bytes())["rows"]
                    return sum(1 for r in rows if r["row"].get("socket") in mine)

                wait_for(lambda: saved() == HELD, timeout_secs=60, interval_secs=0.5)
                # 1. The extension dies (as osqueryd's watchdog would kill it) and comes back.
                (child,) = osqd.children
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
                wait_for(lambda: "tracked_connections" not in osqd.extensions().values())
                launch(osqd, workdir)
                _run(osqd, 3)
            # 2. osqueryd restarts with its database.
            with osqueryd(workdir, "osquery.db", port) as osqd:
                _run(osqd, 3)
            # 3. osqueryd restarts with its database wiped: a counter-0 re-log.
            with osqueryd(workdir, "wiped.db", port) as osqd:
                _run(osqd, 3)
                final = logged(osqd, both_ends)
            wait_for(lambda: _service_caught_up(workdir), timeout_secs=60, interval_secs=0.5)
            assert outbox(workdir) == queued, "no alert queued again after the restarts"
        finally:
            service.terminate()
            _, stderr = service.communicate(timeout=15)
            close_with_reset(clients + accepted)
        assert service.returncode == 0, stderr.decode(errors="replace")

    later = final[len(first) :]
    assert [a for a, _, _ in later if a == "removed"] == [], "nothing was logged removed"
    relogged = [(c, cols) for a, c, cols in later if a == "added"]
    assert all(counter == 0 for counter, _ in relogged), "only the wiped database's re-log"
    assert sorted(json.dumps(cols, sort_keys=True) for _, cols in relogged) == sorted(
        json.dumps(cols, sort_keys=True) for a, _, cols in first if a == "added"
    ), "the re-logged rows are the very rows logged before"
    assert len(receiver.bodies()) == 1


def _run(osqd: Standin, times: int) -> None:
    """Run the pack ``times`` times, a sample interval apart."""
    for _ in range(times):
        time.sleep(1.0)
        osqd.run_scheduled_once()


def _service_caught_up(workdir: Path) -> bool:
    """Whether the alert service has read the whole results log."""
    log_size = (workdir / "logs" / "osqueryd.results.log").stat().st_size
    if not (workdir / "alerts" / "state.sqlite3").exists():
        return False
    try:
        with sqlite3.connect(workdir / "alerts" / "state.sqlite3") as db:
            offsets = [row[0] for row in db.execute("SELECT offset FROM checkpoints")]
    except sqlite3.OperationalError:
        return False  # the service has created the file but not yet its tables
    return offsets == [log_size]
