"""Every attempt has a total deadline; a destination that delivers nothing is reported.

A real HTTP server on 127.0.0.1 answers one byte at a time: each byte arrives well
inside the read timeout, so only a deadline on the whole attempt can stop it. The
delivery service then reports the destination stalled on ``/health`` and in the
``alert_service_destination_stalled`` gauge.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deliver_support import make_alert

from alert_service.deliver import DeliveryService, DestinationSettings, RetryPolicy, ScaledClock
from alert_service.errors import NotifyError
from alert_service.notify import SlackNotifier, WebhookNotifier
from alert_service.secret import Secret
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import transaction

REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Trickler:
    """A TCP server answering every request with :data:`REPLY`, one byte per
    ``interval_secs``; records how each connection ended."""

    interval_secs: float
    url: str = ""
    requests: int = 0
    outcomes: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            with self.lock:
                self.requests += 1
            sent = 0
            try:
                for byte in REPLY:
                    if self.stop.wait(self.interval_secs):
                        return
                    conn.sendall(bytes([byte]))
                    sent += 1
                # Wait for the client to close (or the test to end).
                conn.settimeout(60)
                conn.recv(1)
                outcome = "complete"
            except OSError:
                outcome = f"client closed after {sent} bytes"
            with self.lock:
                self.outcomes.append(outcome)


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    state = Trickler(interval_secs=1.0)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    state.url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not state.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=state.serve, args=(conn,), daemon=True)
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield state
    finally:
        state.stop.set()
        acceptor.join(5)
        listener.close()
        for t in threads:
            t.join(5)


def test_a_trickling_reply_is_cut_at_the_total_deadline(trickler: Trickler) -> None:
    # The read timeout (5 s) never expires: a byte comes every second for ~70 s.
    hook = WebhookNotifier.from_config(
        "hook", {"url": trickler.url, "timeout_secs": 5, "total_timeout_secs": 2}
    )
    with pytest.raises(NotifyError) as caught:
        hook.send({"x": 1}, idempotency_key="k1")
    hook.close()
    assert caught.value.retryable
    assert caught.value.error_type == "timeout"
    assert "total 2 s" in str(caught.value)
    # The server saw the client go away long before the reply was complete.
    deadline = time.monotonic() + 10
    while not trickler.outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trickler.outcomes and trickler.outcomes[0].startswith("client closed after")
    sent = int(trickler.outcomes[0].split()[3])
    assert sent < len(REPLY)


def test_a_slack_trickle_is_cut_too(trickler: Trickler) -> None:
    slack = SlackNotifier.from_config(
        "slack", {"url": Secret(trickler.url, "env:S"), "total_timeout_secs": 1.5}
    )
    with pytest.raises(NotifyError) as caught:
        slack.notify(make_alert())
    slack.close()
    assert caught.value.retryable and caught.value.error_type == "timeout"


def test_health_and_gauge_report_a_stalled_destination(trickler: Trickler, tmp_path: Path) -> None:
    db = str(tmp_path / "state.sqlite3")
    conn = open_state(db)
    # 1 real second is 100 clock seconds: each 1.5 s attempt lasts 150 clock seconds.
    clock = ScaledClock(100.0)
    hook = WebhookNotifier.from_config(
        "hook", {"url": trickler.url, "timeout_secs": 5, "total_timeout_secs": 1.5}
    )
    policy = RetryPolicy(initial_backoff_secs=1.0, max_backoff_secs=5.0, stalled_after_secs=600.0)
    service = DeliveryService(
        db, {"hook": hook}, {"hook": DestinationSettings()}, policy, clock=clock
    )
    with transaction(conn):
        enqueue_alerts(
            conn, [make_alert(notify=("hook",), counter=i) for i in range(3)], clock.time()
        )
    service.start()
    try:
        healthy, doc = service.health()
        assert doc["destinations"]["hook"]["stalled"] is False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            healthy, doc = service.health()
            if doc["destinations"]["hook"]["stalled"]:
                break
            time.sleep(0.2)
        dest = doc["destinations"]["hook"]
        assert dest["stalled"] is True
        assert dest["pending"] == 3
        assert dest["stalled_seconds"] > 600
        assert healthy and doc["status"] == "degraded"
        assert "nothing delivered for" in doc["reason"]
        # Attempts were cut and retried: the endpoint saw more than one request.
        assert trickler.requests >= 2
        assert "timed out (total 1.5 s)" in dest["last_error"]
        registry = service.metrics.registry
        assert (
            registry.get_sample_value("alert_service_destination_stalled", {"destination": "hook"})
            == 1.0
        )
        stalled = registry.get_sample_value(
            "alert_service_destination_stalled_seconds", {"destination": "hook"}
        )
        assert stalled is not None and stalled > 600
    finally:
        service.stop(timeout_secs=10)
        hook.close()
        conn.close()
