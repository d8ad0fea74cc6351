"""Delivery workers step by step on a manual clock, against a real scripted endpoint.

Each test drives :meth:`DestinationWorker.step` in the test thread with a
:class:`FakeClock` whose ``wait`` advances time, so backoffs, Retry-After, rate limits
and dedup windows of minutes run instantly and deterministically.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deliver_support import HANG, Answer, FakeClock, ScriptedEndpoint, make_alert, serve_endpoint

from alert_service.deliver import (
    DeliveryService,
    DestinationSettings,
    DestinationWorker,
    TokenBucket,
    connection_key,
    silence_key,
)
from alert_service.deliver.retry import RetryPolicy
from alert_service.match import Alert
from alert_service.notify import (
    WebhookNotifier,
)
from alert_service.ops import ServiceMetrics
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import purge, queue_depths, transaction
from alert_service.stats import Stats

POLICY = RetryPolicy(
    initial_backoff_secs=1.0,
    max_backoff_secs=60.0,
    max_age_secs=3600.0,
    max_retry_after_secs=300.0,
    dedup_window_secs=600.0,
    poll_interval_secs=0.5,
)


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with serve_endpoint() as state:
        yield state


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, sqlite3.Connection]]:
    path = str(tmp_path / "state.sqlite3")
    conn = open_state(path)
    yield path, conn
    conn.close()


class Harness:
    """A worker plus its database, clock and metrics."""

    def __init__(
        self,
        db: tuple[str, sqlite3.Connection],
        url: str,
        *,
        policy: RetryPolicy = POLICY,
        settings: DestinationSettings | None = None,
        rule_windows: dict[str, float] | None = None,
        rng_value: float = 1.0,
        timeout_secs: float = 5.0,
    ) -> None:
        self.path, self.conn = db
        self.clock = FakeClock()
        self.stats = Stats()
        self.metrics = ServiceMetrics(self.stats)
        self.notifier = WebhookNotifier.from_config(
            "hook", {"url": url, "timeout_secs": timeout_secs}
        )
        self.worker = DestinationWorker(
            self.notifier,
            self.path,
            policy,
            settings or DestinationSettings(),
            metrics=self.metrics,
            stats=self.stats,
            clock=self.clock,
            rng=lambda: rng_value,
        )
        self.rule_windows = rule_windows

    def enqueue(self, *alerts: Alert) -> int:
        with transaction(self.conn):
            return enqueue_alerts(self.conn, alerts, self.clock.time(), self.rule_windows)

    def step(self) -> float:
        return self.worker.step(self.conn)

    def run_until_idle(self, max_steps: int = 200) -> None:
        """Step, advancing the clock by each returned wait, until nothing is pending."""
        for _ in range(max_steps):
            if not queue_depths(self.conn):
                return
            wait = self.step()
            self.clock.advance(wait)
        raise AssertionError("outbox did not drain")

    def states(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT alert_id, state FROM outbox ORDER BY rowid").fetchall()
        return {a: s for a, s in rows}

    def row(self, alert_id: str) -> dict[str, Any]:
        cur = self.conn.execute("SELECT * FROM outbox WHERE alert_id = ?", (alert_id,))
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))

    def metric(self, name: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"destination": "hook"})
        return 0.0 if value is None else value

    def close(self) -> None:
        self.notifier.close()


@pytest.fixture
def harness_factory(
    db: tuple[str, sqlite3.Connection], endpoint: ScriptedEndpoint
) -> Iterator[Any]:
    made: list[Harness] = []

    def make(**kw: Any) -> Harness:
        h = Harness(db, endpoint.url, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_delivers_each_alert_once_with_its_id(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    alerts = [make_alert(pid=100 + i) for i in range(3)]
    assert h.enqueue(*alerts) == 3
    assert h.enqueue(*alerts) == 0  # re-read after a crash: nothing twice
    h.run_until_idle()
    assert [r.headers["webhook-id"] for r in endpoint.requests] == [a.id for a in alerts]
    assert set(h.states().values()) == {"sent"}
    assert h.row(alerts[0].id)["attempts"] == 1
    assert h.row(alerts[0].id)["delivered_at"] == h.clock.now
    assert h.metric("alert_service_notifications_sent_total") == 3
    assert h.stats.sent == 3


def test_repeat_within_the_window_is_suppressed_then_alerts_again(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    first = make_alert(local_port=40001, counter=3)
    again = make_alert(local_port=40002, counter=4)  # same process and peer, new source port
    other = make_alert(remote_port=4445)
    assert len({first.id, again.id, other.id}) == 3
    h.enqueue(first, again, other)
    h.run_until_idle()
    assert h.states() == {first.id: "suppressed", again.id: "sent", other.id: "sent"} or (
        h.states() == {first.id: "sent", again.id: "suppressed", other.id: "sent"}
    )
    assert len(endpoint.requests) == 2
    assert h.metric("alert_service_notifications_suppressed_total") == 1
    key = silence_key("hook", first.as_dict())
    (until,) = h.conn.execute("SELECT until FROM silences WHERE key = ?", (key,)).fetchone()
    assert until == pytest.approx(h.clock.now + 600.0, abs=1.0)
    # After the window the same connection alerts again.
    h.clock.advance(601)
    later = make_alert(local_port=40003, counter=9)
    h.enqueue(later)
    h.run_until_idle()
    assert h.states()[later.id] == "sent"
    assert len(endpoint.requests) == 3


def test_a_failed_first_send_silences_nothing(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    endpoint.answer(500)
    first = make_alert(local_port=40001, counter=3)
    second = make_alert(local_port=40002, counter=4)
    h.enqueue(first)
    h.step()  # first attempt fails
    assert h.states() == {first.id: "pending"}
    assert h.conn.execute("SELECT COUNT(*) FROM silences").fetchone() == (0,)
    h.enqueue(second)
    h.run_until_idle()
    # Exactly one of the two reached the endpoint with a 2xx; the other was suppressed.
    assert len(endpoint.accepted()) == 1
    assert sorted(h.states().values()) == ["sent", "suppressed"]
    assert h.row(first.id)["attempts"] == 1
    assert endpoint.requests[0].status == 500


def test_rule_window_zero_disables_dedup(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    h = harness_factory(rule_windows={"reverse-shell": 0.0})
    h.enqueue(make_alert(local_port=1, counter=1), make_alert(local_port=2, counter=2))
    h.run_until_idle()
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize("status", [400, 404, 410])
def test_other_4xx_is_dead_lettered_not_retried(
    harness_factory: Any, endpoint: ScriptedEndpoint, status: int
) -> None:
    h = harness_factory()
    endpoint.answer(Answer(status, body=b"no"))
    alert = make_alert()
    h.enqueue(alert)
    h.run_until_idle()
    assert len(endpoint.requests) == 1
    row = h.row(alert.id)
    assert (row["state"], row["attempts"]) == ("dead", 1)
    assert f"HTTP {status}" in row["last_error"]
    assert h.metric("alert_service_notifications_dead_lettered_total") == 1
    assert h.stats.failed == 1
    # A dead letter silences nothing.
    assert h.conn.execute("SELECT COUNT(*) FROM silences").fetchone() == (0,)


@pytest.mark.parametrize(("header", "expected"), [("120", 120.0), ("100000", 300.0)])
def test_retry_after_is_honoured_up_to_the_cap(
    harness_factory: Any, endpoint: ScriptedEndpoint, header: str, expected: float
) -> None:
    h = harness_factory(rng_value=0.0)
    endpoint.answer(Answer(429, {"Retry-After": header}, b"slow down"))
    alert = make_alert()
    h.enqueue(alert)
    start = h.clock.now
    assert h.step() == 0.0
    row = h.row(alert.id)
    assert row["next_attempt_at"] == pytest.approx(start + expected)
    assert row["state"] == "pending"
    # The destination waits that long: no request before.
    wait = h.step()
    assert wait == pytest.approx(expected)
    assert len(endpoint.requests) == 1
    h.clock.advance(wait)
    h.run_until_idle()
    assert len(endpoint.requests) == 2
    assert h.metric("alert_service_notifications_retried_total") == 1


def test_backoff_is_capped_exponential_with_jitter_and_one_probe_per_pause(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory(rng_value=1.0)  # the top of each jitter range
    endpoint.default = Answer(503, body=b"down")
    alerts = [make_alert(pid=i) for i in range(3)]
    h.enqueue(*alerts)
    pauses: list[float] = []
    for _ in range(10):
        before = len(endpoint.requests)
        h.step()
        assert len(endpoint.requests) == before + 1  # one probe, not one per row
        wait = h.step()
        pauses.append(wait)
        h.clock.advance(wait)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    # Attempts rotate over the rows instead of hammering the first one.
    attempts = sorted(h.row(a.id)["attempts"] for a in alerts)
    assert sum(attempts) == 10
    assert attempts[0] >= 3
    endpoint.default = Answer(200)
    h.clock.advance(120)
    h.run_until_idle()
    assert endpoint.webhook_ids() == {a.id: 1 for a in alerts}


def test_jitter_stays_within_the_cap(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    h = harness_factory(rng_value=0.25)
    endpoint.answer(500)
    h.enqueue(make_alert())
    h.step()
    assert h.step() == pytest.approx(0.25)


def test_too_old_is_dead_lettered_at_its_next_failure(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    endpoint.default = Answer(500)
    alert = make_alert()
    h.enqueue(alert)
    h.clock.advance(3601)
    h.step()
    row = h.row(alert.id)
    assert row["state"] == "dead"
    assert row["last_error"].startswith("gave up: ")


def test_max_attempts(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    policy = RetryPolicy(initial_backoff_secs=1.0, max_backoff_secs=1.0, max_attempts=3)
    h = harness_factory(policy=policy)
    endpoint.default = Answer(500)
    alert = make_alert()
    h.enqueue(alert)
    h.run_until_idle()
    assert len(endpoint.requests) == 3
    assert h.row(alert.id)["state"] == "dead"


def test_burst_is_folded_into_digests(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    settings = DestinationSettings(digest_threshold=5, digest_max_alerts=5)
    h = harness_factory(settings=settings)
    alerts = [make_alert(pid=200 + i) for i in range(12)]
    h.enqueue(*alerts)
    h.run_until_idle()
    bodies = [r.json() for r in endpoint.requests]
    kinds = ["digest" if b.get("type") == "digest" else "single" for b in bodies]
    assert kinds == ["digest", "digest", "single", "single"]
    assert [b["count"] for b in bodies[:2]] == [5, 5]
    delivered = [a["id"] for b in bodies[:2] for a in b["alerts"]] + [b["id"] for b in bodies[2:]]
    assert sorted(delivered) == sorted(a.id for a in alerts)
    assert endpoint.requests[0].headers["webhook-id"].startswith("digest-")
    assert set(h.states().values()) == {"sent"}
    assert h.metric("alert_service_digests_sent_total") == 2
    assert h.metric("alert_service_notifications_sent_total") == 12


def test_digest_drops_repeats_and_silenced_keys(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory(settings=DestinationSettings(digest_threshold=2))
    distinct = [make_alert(pid=300 + i) for i in range(3)]
    repeats = [make_alert(pid=300, local_port=50000 + i, counter=10 + i) for i in range(2)]
    h.enqueue(*distinct, *repeats)
    h.run_until_idle()
    (digest,) = [r.json() for r in endpoint.requests]
    assert digest["count"] == 3
    assert sorted(h.states().values()) == ["sent"] * 3 + ["suppressed"] * 2


def test_failed_digest_is_retried_whole(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    h = harness_factory(settings=DestinationSettings(digest_threshold=2))
    endpoint.answer(502)
    alerts = [make_alert(pid=400 + i) for i in range(4)]
    h.enqueue(*alerts)
    h.run_until_idle()
    first, second = (r.json() for r in endpoint.requests)
    assert first == second
    assert {h.row(a.id)["attempts"] for a in alerts} == {2}


def test_rate_limit_spaces_requests(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    h = harness_factory(settings=DestinationSettings(rate_limit_per_minute=60, rate_limit_burst=1))
    h.enqueue(*(make_alert(pid=500 + i) for i in range(4)))
    start = h.clock.now
    h.run_until_idle()
    assert len(endpoint.requests) == 4
    assert h.clock.now - start == pytest.approx(3.0)
    assert [w for w in h.clock.waits if w > 0] == pytest.approx([1.0, 1.0, 1.0])


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(120, 2, lambda: now[0])
    assert bucket.take() and bucket.take()
    assert not bucket.take()
    assert bucket.wait_secs() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take()
    now[0] = 100.0
    assert bucket.take() and bucket.take() and not bucket.take()
    with pytest.raises(ValueError):
        TokenBucket(0, 1, lambda: 0.0)


def test_unreadable_row_is_dead_lettered(harness_factory: Any, endpoint: ScriptedEndpoint) -> None:
    h = harness_factory()
    h.conn.execute(
        "INSERT INTO outbox (alert_id, rule, destination, payload, created_at, next_attempt_at)"
        " VALUES ('x', 'r', 'hook', '{not json', 0, 0)"
    )
    h.conn.execute(
        "INSERT INTO outbox (alert_id, rule, destination, payload, created_at, next_attempt_at)"
        " VALUES ('y', 'r', 'hook', '{\"id\": \"y\"}', 0, 0)"
    )
    h.run_until_idle()
    assert h.states() == {"x": "dead", "y": "dead"}
    assert h.row("y")["last_error"] == "unreadable payload"
    assert endpoint.requests == []


def test_connection_key_ignores_source_port_and_unwraps_mapped_addresses() -> None:
    a = make_alert(local_port=1, remote_address="198.51.100.7").as_dict()
    b = make_alert(local_port=2, remote_address="::ffff:198.51.100.7").as_dict()
    c = make_alert(pid=2).as_dict()
    assert connection_key(a) == connection_key(b)
    assert silence_key("hook", a) == silence_key("hook", b)
    assert silence_key("hook", a) != silence_key("slack", a)
    assert silence_key("hook", a) != silence_key("hook", c)
    removed = make_alert(action="removed").as_dict()
    assert silence_key("hook", a) != silence_key("hook", removed)


def test_purge_deletes_old_finished_rows_and_expired_silences(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    h.enqueue(make_alert(pid=1))
    h.run_until_idle()
    pending = make_alert(pid=2)
    endpoint.default = Answer(500)
    h.enqueue(pending)
    h.step()
    assert purge(h.conn, h.clock.now, 3600) == (0, 0)
    assert purge(h.conn, h.clock.now + 7200, 3600) == (1, 1)
    assert h.states() == {pending.id: "pending"}


# -- real threads -------------------------------------------------------------------


def test_a_hanging_destination_does_not_delay_another(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    conn = open_state(path)
    with serve_endpoint() as slow, serve_endpoint() as fast:
        slow.default = Answer(HANG)
        notifiers = {
            "slow": WebhookNotifier.from_config("slow", {"url": slow.url, "timeout_secs": 20}),
            "fast": WebhookNotifier.from_config("fast", {"url": fast.url}),
        }
        service = DeliveryService(path, notifiers, {}, RetryPolicy(poll_interval_secs=0.05))
        service.start()
        try:
            alerts = [make_alert(pid=600 + i, notify=("slow", "fast")) for i in range(5)]
            with transaction(conn):
                enqueue_alerts(conn, alerts, time.time())
            started = time.monotonic()
            assert fast.wait_for(5, timeout_secs=10, accepted=True) == 5
            assert time.monotonic() - started < 5.0
            deadline = time.monotonic() + 5
            healthy, doc = service.health()
            while doc["destinations"]["fast"]["pending"] and time.monotonic() < deadline:
                time.sleep(0.02)
                healthy, doc = service.health()
            assert healthy
            assert doc["status"] == "ok"
            assert doc["destinations"]["fast"]["pending"] == 0
            assert doc["destinations"]["slow"]["pending"] == 5
            assert fast.webhook_ids() == {a.id: 1 for a in alerts}
        finally:
            slow.release.set()
            service.stop(timeout_secs=10)
            for n in notifiers.values():
                n.close()
    conn.close()


def test_service_delivers_from_threads_and_stops(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    conn = open_state(path)
    with serve_endpoint() as endpoint:
        notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
        service = DeliveryService(
            path, {"hook": notifier}, {}, RetryPolicy(poll_interval_secs=0.05)
        )
        service.start()
        try:
            with transaction(conn):
                enqueue_alerts(conn, [make_alert()], time.time())
            assert endpoint.wait_for(1, timeout_secs=10, accepted=True) == 1
            assert all(w.health().alive for w in service.workers.values())
        finally:
            assert service.stop(timeout_secs=10)
            notifier.close()
    conn.close()


def test_notify_retrying_logs_when_the_row_is_really_tried_again(
    harness_factory: Any, endpoint: ScriptedEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    # Review finding: delay_secs was the row's own backoff, but the whole destination
    # pauses on its consecutive failures, so the next attempt came later than logged.
    h = harness_factory(rng_value=1.0)
    endpoint.default = Answer(503, body=b"down")
    first, second = make_alert(pid=1), make_alert(pid=2)
    h.enqueue(first, second)
    with caplog.at_level(logging.INFO, logger="alert_service"):
        h.step()  # first fails: row backoff 1 s, destination pause 1 s
        h.clock.advance(h.step())
        failed_at = h.clock.now
        h.step()  # second fails (its first attempt) while failures run at 2: pause 2 s
    logged = [
        dict(getattr(r, "alert_fields", {}))
        for r in caplog.records
        if r.getMessage() == "notify_retrying"
    ]
    assert [
        (e["alert_id"], e["row_backoff_secs"], e["destination_pause_secs"], e["retry_in_secs"])
        for e in logged
    ] == [(first.id, 1.0, 1.0, 1.0), (second.id, 1.0, 2.0, 2.0)]
    assert "delay_secs" not in logged[1]
    # And that is when the destination tries again.
    assert h.step() == pytest.approx(2.0)
    h.clock.advance(1.999)
    h.step()
    assert len(endpoint.requests) == 2
    h.clock.now = failed_at + 2.0
    h.step()
    assert len(endpoint.requests) == 3


def test_a_reply_cut_short_is_retried_not_dead_lettered(
    db: tuple[str, sqlite3.Connection],
) -> None:
    # A 200 whose chunked body stops early (ChunkedEncodingError) was dead-lettered at
    # once; a transport failure after the request was sent must be retried.
    server = socket.create_server(("127.0.0.1", 0))

    def serve_once() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ncut")

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    h = Harness(db, url)
    try:
        alert = make_alert()
        h.enqueue(alert)
        h.step()
        thread.join(5)
        row = h.row(alert.id)
        assert (row["state"], row["attempts"]) == ("pending", 1)
        assert row["last_error"].startswith("hook: reply unreadable (ChunkedEncodingError")
        assert h.metric("alert_service_notifications_dead_lettered_total") == 0
        assert h.metric("alert_service_notifications_retried_total") == 1
    finally:
        h.close()
        server.close()


class BuggyOnce(WebhookNotifier):
    """A webhook whose first send hits a bug (not a NotifyError)."""

    failed = False

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug in a notifier")
        super().send(payload, idempotency_key=idempotency_key)


def test_a_notifier_bug_dead_letters_that_row_and_the_worker_goes_on(
    db: tuple[str, sqlite3.Connection], endpoint: ScriptedEndpoint
) -> None:
    # Coverage kept from the removed in-process dispatcher: an unexpected exception in
    # a notifier never stops delivery.
    h = Harness(db, endpoint.url)
    buggy = BuggyOnce.from_config("hook", {"url": endpoint.url})
    h.worker.notifier = buggy
    try:
        first, second = make_alert(pid=1), make_alert(pid=2)
        h.enqueue(first, second)
        h.run_until_idle()
        assert h.states() == {first.id: "dead", second.id: "sent"}
        assert h.row(first.id)["last_error"] == "internal: RuntimeError: bug in a notifier"
        assert endpoint.webhook_ids() == {second.id: 1}
        assert (h.stats.failed, h.stats.sent) == (1, 1)
    finally:
        buggy.close()
        h.close()


def test_a_row_queued_before_records_were_versioned_is_delivered_as_a_new_one(
    harness_factory: Any, endpoint: ScriptedEndpoint
) -> None:
    h = harness_factory()
    old, new = make_alert(pid=7), make_alert(pid=8)
    h.conn.execute(
        "INSERT INTO outbox (alert_id, rule, destination, payload, created_at, next_attempt_at)"
        " VALUES (?, ?, 'hook', ?, 0, 0)",
        (old.id, old.rule, json.dumps(old.as_dict())),
    )
    h.enqueue(new)
    h.run_until_idle()
    assert h.states() == {old.id: "sent", new.id: "sent"}
    bodies = {r.headers["webhook-id"]: r.json() for r in endpoint.requests}
    assert bodies[old.id] == h.notifier.render(replace(old, notify=("hook",)))
    assert bodies[new.id] == h.notifier.render(new)
