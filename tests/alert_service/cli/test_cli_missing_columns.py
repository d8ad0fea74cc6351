"""``run`` with a renamed column: warning, gauge and ``/health`` degraded; the line is
kept and other rules still alert (issue 12 item 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from alerts_support import REPO_ROOT

ROWS = 60


def line(i: int, **columns: str) -> str:
    row = {"pid": str(100 + i), "remote_port": "443", "name": "curl", **columns}
    return json.dumps(
        {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": "web-01",
            "unixTime": 1756796709 + i,
            "epoch": 0,
            "counter": 1 + i,
            "columns": row,
            "action": "added",
        }
    )


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_for(path: Path, text: str, timeout_secs: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen in {path}: {content[-2000:]}")


def test_run_reports_a_renamed_column(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    # The pack renamed remote_address to peer_address; pid "None" in one row.
    lines = [line(i, peer_address="198.51.100.7") for i in range(ROWS)]
    lines.append(line(ROWS, peer_address="198.51.100.7", pid="None", remote_port="4444"))
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
sources: [{{path: {log}, start_at: beginning, poll_interval_secs: 0.05}}]
notifiers: [{{name: hook, type: webhook, url: "http://127.0.0.1:9/x"}}]
metrics: {{listen_address: 127.0.0.1, port: 0}}
rules:
  - {{name: bad-peer, notify: [hook], remote_address: {{include: [198.51.100.0/24]}}}}
  - {{name: reverse-shell, notify: [hook], remote_port: [4444]}}
""",
        encoding="utf-8",
    )
    stderr_path = tmp_path / "stderr.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(stderr_path, '"ops_listening"')
            text = wait_for(stderr_path, '"rule_column_missing"')
            events = [json.loads(x) for x in text.splitlines()]
            port = next(e["port"] for e in events if e["event"] == "ops_listening")
            (warning,) = [e for e in events if e["event"] == "rule_column_missing"]
            assert warning["level"] == "warning"
            assert (warning["query"], warning["column"], warning["rules"]) == (
                "pack_tracked_connections_tracked_connections",
                "remote_address",
                ["bad-peer"],
            )
            deadline = time.monotonic() + 20
            health: dict[str, object] = {}
            while time.monotonic() < deadline:
                status, body = get(port, "/health")
                health = json.loads(body)
                if health.get("rule_columns_missing"):
                    break
                time.sleep(0.05)
            assert status == 200
            assert health["status"] == "degraded"
            assert health["rule_columns_missing"] == [
                {
                    "query": "pack_tracked_connections_tracked_connections",
                    "column": "remote_address",
                    "rules": ["bad-peer"],
                }
            ]
            assert "no 'remote_address'" in str(health["reason"])
            metrics = get(port, "/metrics")[1]
            assert (
                'alert_service_rule_column_missing{column="remote_address",'
                'query="pack_tracked_connections_tracked_connections"} 1.0'
            ) in metrics
            wait_for(stderr_path, '"notify_retrying"')  # the 4444 row's alert was queued
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = [json.loads(x) for x in stderr_path.read_text(encoding="utf-8").splitlines()]
    stopped = events[-1]
    assert stopped["event"] == "service_stopped"
    assert stopped["parse_errors"] == 0
    assert stopped["lines_read"] == ROWS + 1
    assert sum(e["event"] == "rule_column_missing" for e in events) == 1
