"""A local user cannot exhaust the alert service through its ops port, and running out
of file descriptors never dead-letters an alert.

* ``run`` is started with a soft limit of 256 file descriptors; the test holds 400 idle
  connections, slow heads and oversized heads against the ops port. Alerts written to
  the log must still reach a real webhook receiver, and ``/health`` must answer.
* In a child process whose descriptors are used up for real (``EMFILE``), a webhook
  and a ``command`` action fail; both rows stay pending and are delivered once
  descriptors are free again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from alerts_support import REPO_ROOT
from deliver_support import serve_endpoint

SERVICE_NOFILE = 256
HERE = Path(__file__).resolve().parent


def _event_line(port: int, pid: int) -> bytes:
    doc = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": "web-01",
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709,
        "epoch": 0,
        "counter": 7,
        "action": "added",
        "columns": {
            "pid": str(pid),
            "name": "nc",
            "remote_address": "198.51.100.7",
            "remote_port": str(port),
            "local_address": "10.0.0.5",
            "local_port": str(40000 + pid),
            "protocol": "6",
            "family": "2",
        },
    }
    return json.dumps(doc).encode() + b"\n"


# ``run`` with a soft limit on file descriptors (as LimitNOFILE= would set it).
LIMITED_RUN = """
import resource, runpy, sys
soft = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
sys.argv = ["alert_service", "run", "--config", sys.argv[2]]
runpy.run_module("alert_service", run_name="__main__")
"""


def _wait_for(path: Path, text: str, timeout_secs: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_secs
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{content[-3000:]}")


def _get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.status, resp.read()


def test_held_ops_connections_stop_neither_alerts_nor_health(tmp_path: Path) -> None:
    log = tmp_path / "results.log"
    log.write_bytes(b"")
    stderr_path = tmp_path / "stderr.log"
    held: list[socket.socket] = []
    with serve_endpoint() as endpoint:
        config = tmp_path / "alerts.yaml"
        config.write_text(
            f"""
state_dir: {tmp_path / "state"}
sources: [{{path: {log}, start_at: beginning, poll_interval_secs: 0.05}}]
notifiers:
  - {{name: hook, type: webhook, url: "{endpoint.url}", rate_limit_per_minute: 0}}
delivery: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.5, dedup_window_secs: 0}}
metrics: {{listen_address: 127.0.0.1, port: 0}}
rules:
  - {{name: shell, notify: [hook], remote_port: [4444]}}
""",
            encoding="utf-8",
        )
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-c", LIMITED_RUN, str(SERVICE_NOFILE), str(config)],
                cwd=REPO_ROOT,
                env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            text = _wait_for(stderr_path, '"ops_listening"')
            port = next(
                json.loads(line)["port"] for line in text.splitlines() if '"ops_listening"' in line
            )
            # More idle connections than the service has descriptors.
            for _ in range(400):
                with contextlib.suppress(OSError):
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            # Slow heads (never finished) and heads far over any sane size.
            for i, sock in enumerate(held[:40]):
                try:
                    if i % 2:
                        sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                    else:
                        sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Big: " + b"a" * 200_000)
                except OSError:
                    pass
            assert len(held) >= SERVICE_NOFILE  # the old server would have run out
            with open(log, "ab") as fh:
                for pid in (1, 2, 3):
                    fh.write(_event_line(4444, pid))
            assert endpoint.wait_for(3, timeout_secs=30, accepted=True) == 3
            # /health answers; the last delivery is marked just after its reply.
            for _ in range(100):
                status, body = _get(port, "/health")
                assert status == 200
                if json.loads(body)["destinations"]["hook"]["pending"] == 0:
                    break
                time.sleep(0.1)
            assert json.loads(body)["destinations"]["hook"]["pending"] == 0
            status, body = _get(port, "/metrics")
            assert status == 200 and b"alert_service_notifications_sent_total" in body
            logged = stderr_path.read_text(encoding="utf-8")
            assert "Too many open files" not in logged
        finally:
            for sock in held:
                sock.close()
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


CHILD = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[3])
from deliver_support import FakeClock, make_alert
from alert_service.deliver import DestinationSettings, DestinationWorker
from alert_service.deliver import RetryPolicy
from alert_service.notify import CommandNotifier, WebhookNotifier
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import transaction

db, url = sys.argv[1], sys.argv[2]
conn = open_state(db)
clock = FakeClock()
notifiers = [
    WebhookNotifier.from_config("hook", {"url": url}),
    CommandNotifier.from_config("cmd", {"command": ["/bin/true"]}),
]
workers = [
    DestinationWorker(n, db, RetryPolicy(), DestinationSettings(), clock=clock) for n in notifiers
]
with transaction(conn):
    enqueue_alerts(conn, [make_alert(notify=("hook", "cmd"))], clock.time())

def states():
    return {d: (s, e or "") for d, s, e in conn.execute(
        "SELECT destination, state, last_error FROM outbox").fetchall()}

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
hogs = []
try:
    while True:
        hogs.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
for w in workers:
    w.step(conn)
exhausted = states()
for fd in hogs:
    os.close(fd)
clock.advance(3600)
for w in workers:
    w.paused_until = None
    w.step(conn)
print(json.dumps({"exhausted": exhausted, "after": states()}))
"""


def test_running_out_of_descriptors_is_retried_not_dead_lettered(tmp_path: Path) -> None:
    with serve_endpoint() as endpoint:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(tmp_path / "state.sqlite3"),
                endpoint.url,
                str(HERE.parent),
            ],
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.splitlines()[-1])
        accepted = len(endpoint.accepted())
    exhausted = result["exhausted"]
    assert exhausted["hook"][0] == "pending" and "EMFILE" in exhausted["hook"][1]
    assert exhausted["cmd"][0] == "pending" and "Too many open files" in exhausted["cmd"][1]
    assert {d: s for d, (s, _) in result["after"].items()} == {"hook": "sent", "cmd": "sent"}
    assert accepted == 1
