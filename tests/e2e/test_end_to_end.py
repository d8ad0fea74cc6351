"""Connection on this host → extension → stand-in pack → results log → alert service → webhook."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from tests.helpers.osqueryd import PACK, ROOT, short_tmpdir, standin_with_extension
from tests.helpers.procs import wait_for
from tests.helpers.receiver import webhook_receiver


def _alert_config(workdir: Path, results_log: Path, url: str, port: int) -> Path:
    config = {
        "state_dir": str(workdir / "state"),
        "sources": [{"path": str(results_log), "start_at": "beginning"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": url, "timeout_secs": 5}],
        "rules": [
            {
                "name": "c2-port",
                "notify": ["hook"],
                "actions": ["added"],
                "remote_port": [port],
                "remote_address": {"include": ["127.0.0.0/8"]},
            }
        ],
    }
    path = workdir / "alerts.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_connection_fires_one_webhook() -> None:
    with (
        short_tmpdir() as workdir,
        webhook_receiver() as receiver,
        socket.create_server(("127.0.0.1", 0)) as c2,
        standin_with_extension(workdir, run_scheduler=True) as osqd,
    ):
        port = c2.getsockname()[1]
        osqd.add_pack("tracked_connections", PACK)
        config = _alert_config(workdir, osqd.results_log_path, receiver.url, port)
        service = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stderr=subprocess.PIPE,
        )
        try:
            # let the baseline run (counter 0) pass: it logs at least the c2 listener
            log = osqd.results_log_path
            wait_for(lambda: log.exists() and log.stat().st_size > 0, timeout_secs=60)
            connected_at = time.monotonic()
            client = socket.create_connection(("127.0.0.1", port))
            client_port = client.getsockname()[1]
            wait_for(lambda: len(receiver.requests) >= 1, timeout_secs=60)  # busy hosts: slow
            latency = receiver.requests[0].monotonic - connected_at
            time.sleep(4.5)  # more query runs: the connection must not alert again
            client.close()
        finally:
            service.terminate()
            _, stderr = service.communicate(timeout=15)
        assert service.returncode == 0, stderr.decode(errors="replace")

    bodies = receiver.bodies()
    assert len(bodies) == 1, bodies
    alert = bodies[0]
    assert alert["rule"] == "c2-port"
    assert alert["action"] == "added"
    assert alert["query"] == "pack_tracked_connections_tracked_connections"
    connection = alert["connection"]
    assert connection["remote_port"] == port
    assert connection["local_port"] == client_port
    assert connection["pid"] == os.getpid()
    assert connection["name"] == psutil.Process().name()
    assert connection["direction"] == "outbound"
    # Reported, not asserted: benchmarks/e2e_latency.py measures it over many connections.
    print(f"connect -> webhook latency: {latency:.2f} s")
