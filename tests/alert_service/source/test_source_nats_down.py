"""A NATS server that cannot be reached is reported as structured log events only.

nats-py logs each failed connection attempt with a traceback through the ``nats``
logger by default; in a service whose log is one JSON document per line, those
multi-line tracebacks are noise an operator has to read around. ``run`` must report
the outage as ``source_unreachable`` and stop cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from alerts_support import REPO_ROOT


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_nats_server_logs_events_not_tracebacks(tmp_path: Path) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
sources:
  - nats:
      servers: ["nats://127.0.0.1:{_closed_port()}"]
      stream: RESULTS
      subject: "results.{{partition}}.>"
      partitions: ["0"]
notifiers:
  - {{name: hook, type: webhook, url: "http://127.0.0.1:9/x"}}
rules:
  - {{name: r, notify: [hook], remote_port: [4444]}}
""",
        encoding="utf-8",
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"source_unreachable" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(3)  # more connection attempts
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    lines = log.read_text().splitlines()
    not_json = [line for line in lines if not line.startswith("{")]
    assert not_json == []
    events = [json.loads(line)["event"] for line in lines]
    assert "source_unreachable" in events
    assert events[-1] == "service_stopped"
