"""``replay --config X LOG`` prints exactly the alerts ``run`` delivers from LOG (issue 12
item 4): dedup applies in both, and ``replay`` marks what it suppresses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from alerts_support import REPO_ROOT, ScriptedEndpoint


def line(counter: int, *, pid: int, port: int, local_port: int) -> str:
    return json.dumps(
        {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": "web-01",
            "unixTime": 1756796709 + counter,
            "epoch": 0,
            "counter": counter,
            "columns": {
                "pid": str(pid),
                "protocol": "6",
                "local_address": "10.0.0.5",
                "local_port": str(local_port),
                "remote_address": "203.0.113.9",
                "remote_port": str(port),
                "name": "beacon",
            },
            "action": "added",
        }
    )


def write_config(tmp_path: Path, url: str, log: Path) -> Path:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
sources: [{{path: {log}, start_at: beginning, poll_interval_secs: 0.05}}]
notifiers: [{{name: hook, type: webhook, url: "{url}"}}]
delivery: {{dedup_window_secs: 3600}}
rules:
  - {{name: beacon-4444, notify: [hook], remote_port: [4444]}}
  - {{name: every-6667, notify: [hook], remote_port: [6667], dedup_window_secs: 0}}
""",
        encoding="utf-8",
    )
    return config


def test_replay_prints_the_ids_run_delivers(tmp_path: Path, receiver: ScriptedEndpoint) -> None:
    log = tmp_path / "osqueryd.results.log"
    lines = [
        # A beacon: the same process reconnects from new source ports, three times.
        line(1, pid=700, port=4444, local_port=50001),
        line(2, pid=700, port=4444, local_port=50002),
        line(3, pid=700, port=4444, local_port=50003),
        line(4, pid=701, port=4444, local_port=50004),  # another process: its own alert
        # Dedup off for this rule: each one is sent.
        line(5, pid=702, port=6667, local_port=50005),
        line(6, pid=702, port=6667, local_port=50006),
    ]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = write_config(tmp_path, receiver.url, log)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    replay = subprocess.run(
        [sys.executable, "-m", "alert_service", "replay", "--config", str(config), str(log)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    printed = [json.loads(x) for x in replay.stdout.splitlines()]
    marked = [json.loads(x) for x in replay.stderr.splitlines() if '"alert_suppressed"' in x]
    assert [a["rule"] for a in printed] == [
        "beacon-4444",
        "beacon-4444",
        "every-6667",
        "every-6667",
    ]
    assert len(marked) == 2
    assert {m["rule"] for m in marked} == {"beacon-4444"}
    assert all(m["reason"] == "repeat within the dedup window" for m in marked)
    assert all(m["destinations"] == ["hook"] for m in marked)
    finished = [json.loads(x) for x in replay.stderr.splitlines() if '"replay_finished"' in x]
    assert finished[-1]["suppressed"] == 2

    stderr_path = tmp_path / "run.log"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            receiver.wait_for(4, timeout_secs=30, accepted=True)
            time.sleep(1.0)  # anything else would arrive now
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    delivered = [r.json()["id"] for r in receiver.accepted()]
    assert sorted(delivered) == sorted(a["id"] for a in printed)
