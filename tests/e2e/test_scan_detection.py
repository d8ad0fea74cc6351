"""A real port scan on loopback → extension → stand-in pack → ``run`` → one scan alert.

One child process connects to 300 loopback ports (20 listening, tried first, then 280
bound but not listening, so refused); the shipped ``port-scan`` rule
(examples/detections.yaml, without its loopback exclusion) counts the refused attempts
only and must send exactly one alert for it, naming the child's pid, whose sample holds
refused attempts and none of the 20 connections. The pack is narrowed to the child's
pid: the host may be busy, and other processes are not this test's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from extension.collect.linux_events import EventsUnavailableError, LinuxEventSource
from tests.helpers.flows import closed_ports
from tests.helpers.osqueryd import ROOT, narrowed_pack, short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for
from tests.helpers.receiver import webhook_receiver

SCANNER = """
import socket, sys
ports = [int(p) for p in sys.stdin.readline().split()]
for port in ports:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        pass
    s.close()
print("done", flush=True)
sys.stdin.readline()  # stay alive until the test is finished
"""


def _events_available() -> None:
    source = LinuxEventSource()
    try:
        source.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here (refused attempts are not rows): {err}")
    finally:
        source.stop()


def _config(workdir: Path, results_log: Path, url: str) -> Path:
    shipped = yaml.safe_load((ROOT / "examples" / "detections.yaml").read_text("utf-8"))
    (rule,) = [r for r in shipped["rules"] if r["name"] == "port-scan"]
    # The shipped rule leaves loopback out (test runners on build machines); this scan
    # is on loopback, so that one exclusion is dropped and everything else kept.
    assert rule.pop("remote_address") == {"exclude": ["127.0.0.0/8", "::1/128"]}
    config: dict[str, Any] = {
        "state_dir": str(workdir / "state"),
        "sources": [{"path": str(results_log), "start_at": "beginning"}],
        "notifiers": [{"name": "soc", "type": "webhook", "url": url, "timeout_secs": 5}],
        "rules": [rule],
    }
    path = workdir / "alerts.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_loopback_scan_gives_one_alert() -> None:
    _events_available()
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=64) for _ in range(20)]
    scanner = subprocess.Popen(
        [sys.executable, "-c", SCANNER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        with (
            short_tmpdir() as workdir,
            webhook_receiver() as receiver,
            closed_ports(280) as closed,
            standin_with_extension(workdir, run_scheduler=True) as osqd,
        ):
            osqd.add_pack("tracked_connections", narrowed_pack(f"pid = {scanner.pid}"))
            config = _config(workdir, osqd.results_log_path, receiver.url)
            service = subprocess.Popen(
                [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stderr=subprocess.PIPE,
            )
            try:
                open_ports = [s.getsockname()[1] for s in listeners]
                ports = open_ports + closed  # connections first: they must not count
                assert scanner.stdin is not None and scanner.stdout is not None
                scanner.stdin.write(" ".join(map(str, ports)) + "\n")
                scanner.stdin.flush()
                assert scanner.stdout.readline().strip() == "done"
                wait_for(lambda: len(receiver.requests) >= 1, timeout_secs=90)
                time.sleep(6)  # three more query runs: the scan must not alert again
            finally:
                service.terminate()
                _, stderr = service.communicate(timeout=15)
            assert service.returncode == 0, stderr.decode(errors="replace")
    finally:
        if scanner.stdin is not None:
            scanner.stdin.close()
        scanner.wait(timeout=10)
        if scanner.stdout is not None:
            scanner.stdout.close()
        for listener in listeners:
            listener.close()

    bodies = receiver.bodies()
    assert len(bodies) == 1, bodies
    alert = bodies[0]
    assert alert["rule"] == "port-scan"
    assert alert["kind"] == "aggregate"
    aggregate = alert["aggregate"]
    assert aggregate["type"] == "value_count"
    assert aggregate["group"]["pid"] == scanner.pid
    assert aggregate["group"]["remote_address"] == "127.0.0.1"
    assert aggregate["group"]["host"] == "test-host"
    assert aggregate["count"] == 50  # the threshold: one alert at the crossing
    assert aggregate["first_time"] <= aggregate["last_time"]
    sample = aggregate["sample"]
    assert len(sample) == 10
    assert {row["pid"] for row in sample} == {scanner.pid}
    assert {row["remote_port"] for row in sample} <= set(closed)
    assert {row["status"] for row in sample} == {"refused"}
    assert alert["connection"]["pid"] == scanner.pid
