"""An endpoint down for minutes of compressed time, the service killed with SIGKILL
in the middle: after recovery every alert is delivered and none twice.

The delivery service runs as a real subprocess (deliver_support.py → the same
``build_delivery_service`` as ``run``) on a :class:`ScaledClock` running 60x faster
than the wall clock, with realistic settings (backoff 1 s .. 60 s, Retry-After 30 s):
~5 s of real time are ~5 minutes for the workers. The test process plays the pipeline
and inserts alerts into the outbox over time, as ``run`` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from deliver_support import HANG, Answer, ScriptedEndpoint, make_alert, serve_endpoint

from alert_service.match import Alert
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import queue_depths, transaction

HERE = Path(__file__).resolve().parent.parent  # tests/alert_service
REPO_ROOT = HERE.parents[1]
TIME_SCALE = 60.0
BOTH = ("hook", "digest")


def write_config(tmp_path: Path, hook_url: str, digest_url: str) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"""
log_level: info
sources:
  - path: {tmp_path / "unused.log"}
notifiers:
  - name: hook
    type: webhook
    url: {hook_url}
    timeout_secs: 2
  - name: digest
    type: webhook
    url: {digest_url}
    timeout_secs: 2
    digest_threshold: 10
    digest_max_alerts: 25
delivery:
  initial_backoff_secs: 1
  max_backoff_secs: 60
  max_retry_after_secs: 120
  poll_interval_secs: 6
  max_age_secs: 86400
rules:
  - name: reverse-shell
    notify: [hook, digest]
    remote_port: [4444]
""",
        encoding="utf-8",
    )
    return path


def start(config: Path, state: Path, stderr: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    with open(stderr, "ab") as err:
        return subprocess.Popen(
            [
                sys.executable,
                str(HERE / "deliver_support.py"),
                str(config),
                str(state),
                str(TIME_SCALE),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def produce(state: Path, alerts: list[Alert]) -> None:
    conn = open_state(state)
    try:
        with transaction(conn):
            enqueue_alerts(conn, alerts, time.time())
    finally:
        conn.close()


def pending(state: Path) -> int:
    conn = open_state(state)
    try:
        return sum(q.pending for q in queue_depths(conn).values())
    finally:
        conn.close()


def digest_alert_ids(endpoint: ScriptedEndpoint) -> Counter[str]:
    """Alert ids delivered (2xx) to the digest destination, singles and digests alike."""
    ids: Counter[str] = Counter()
    for request in endpoint.accepted():
        body = request.json()
        if body.get("type") == "digest":
            ids.update(a["id"] for a in body["alerts"])
        else:
            ids[body["id"]] += 1
    return ids


def wait_until(predicate: object, timeout_secs: float) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_outage_with_sigkill_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    stderr = tmp_path / "service.log"
    batches = [
        [make_alert(pid=10_000 + 100 * b + i, counter=b + 1, notify=BOTH) for i in range(n)]
        for b, n in enumerate((10, 30, 30, 20))
    ]
    produced = [a for batch in batches for a in batch]
    with serve_endpoint() as hook, serve_endpoint() as digest:
        config = write_config(tmp_path, hook.url, digest.url)
        proc = start(config, state, stderr)
        try:
            # Up: the first batch is delivered.
            produce(state, batches[0])
            assert wait_until(lambda: pending(state) == 0, 20), stderr.read_text()

            # Down: 503 with Retry-After 30 s, then 500s, one request hanging.
            hook.default = digest.default = Answer(500, body=b"down")
            hook.answer(Answer(503, {"Retry-After": "30"}), HANG)
            digest.answer(Answer(503, {"Retry-After": "30"}))
            down_at = len(hook.requests), len(digest.requests)
            produce(state, batches[1])
            time.sleep(1.5)  # ~1.5 compressed minutes
            produce(state, batches[2])
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)  # kill -9 in the middle of the outage
            proc.wait(10)
            time.sleep(1.0)  # the endpoint stays down while the service is dead
            hook.release.set()  # the hung request ends without an answer
            proc = start(config, state, stderr)
            produce(state, batches[3])
            time.sleep(2.0)  # ~2 more compressed minutes down
            assert pending(state) == len(produced) * 2 - 20, "delivered while the endpoint was down"
            down_requests = len(hook.requests) - down_at[0] + len(digest.requests) - down_at[1]

            # Recovery.
            hook.default = digest.default = Answer(200)
            assert wait_until(lambda: pending(state) == 0, 60), stderr.read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    hook_ids = hook.webhook_ids()
    digest_ids = digest_alert_ids(digest)
    wanted = {a.id for a in produced}
    figures = {
        "alerts_produced": len(produced),
        "hook_delivered_unique": len(hook_ids),
        "hook_duplicates": sum(n - 1 for n in hook_ids.values()),
        "digest_delivered_unique": len(digest_ids),
        "digest_duplicates": sum(n - 1 for n in digest_ids.values()),
        "digest_messages": sum(1 for r in digest.accepted() if r.json().get("type") == "digest"),
        "requests_while_down": down_requests,
    }
    print("OUTAGE FIGURES", json.dumps(figures))
    assert set(hook_ids) == wanted
    assert set(digest_ids) == wanted
    assert figures["hook_duplicates"] == 0
    assert figures["digest_duplicates"] == 0
    # The backlog after recovery went out folded, not as 80 posts.
    assert figures["digest_messages"] >= 1
    # While down, each destination probed with backoff instead of once per row.
    assert down_requests < 60
    log = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    events = Counter(entry["event"] for entry in log)
    assert events["delivery_started"] == 2
    assert events["notify_retrying"] > 0
    assert events["notify_dead_lettered"] == 0
