"""Rate limits and digests of a destination hold across instances (PostgreSQL state).

Two delivery services — what two instances of a cluster run, sharing nothing but
the PostgreSQL state on 127.0.0.1 — deliver one outbox to one real receiver. With
in-memory token buckets each would send a full burst; the bucket row in the shared
state makes the destination's limit hold for the cluster. Digests fold rows each
claimed once, so no alert is in two digests.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from alerts_support import serve_endpoint
from deliver_support import make_alert
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.config import build_config
from alert_service.deliver import TokenBucket, build_delivery_service
from alert_service.state.buckets import SharedTokenBucket
from alert_service.state.db import open_state
from alert_service.state.outbox import enqueue_alerts, queue_depths, transaction
from alert_service.state.postgres import PgTarget
from tests.helpers.pgstate import pg_target
from tests.helpers.services import need_postgresql, unique_name

__all__ = ["pg_target"]  # the fixture, used by name

NOW = 1_756_796_709.0


def _config(url: str, **hook: Any) -> Any:
    doc: dict[str, Any] = {
        "sources": [{"path": "/nonexistent.log"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": url, **hook}],
        "rules": [{"name": "r", "notify": ["hook"], "remote_port": [4444]}],
        "delivery": {"poll_interval_secs": 0.05, "dedup_window_secs": 0},
    }
    return build_config(doc, "test.yaml", environ={})


def test_two_instances_send_at_most_the_destinations_burst(pg_target: PgTarget) -> None:
    """Burst 3, then 1 per minute: two instances together send 3, not 3 each."""
    conn = open_state(pg_target)
    with transaction(conn):
        # more rows than one worker claims at a time: both instances have rows to send
        enqueue_alerts(conn, [make_alert(host=f"h{i}", rule="r") for i in range(50)], NOW)
    with serve_endpoint() as endpoint:
        config = _config(endpoint.url, rate_limit_per_minute=1, rate_limit_burst=3)
        services = [build_delivery_service(config, pg_target) for _ in range(2)]
        for service in services:
            service.start()
        try:
            assert endpoint.wait_for(3, timeout_secs=30, accepted=True) == 3
            # Long enough for each worker to ask for tokens many times (50 ms polls);
            # not a speed assertion: with a bucket per instance 6 arrive at once.
            time.sleep(1.5)
            ids = endpoint.webhook_ids()
        finally:
            for service in services:
                service.stop()
    assert len(ids) == 3 and set(ids.values()) == {1}
    assert queue_depths(conn)["hook"].pending == 47
    # The waiting rows are not claimed: any instance may send them when a token comes.
    claimed = conn.execute(
        "SELECT COUNT(*) FROM outbox WHERE claim_until > 0 AND state = 'pending'"
    )
    assert claimed.fetchone()[0] == 0
    tokens = conn.execute("SELECT tokens FROM rate_buckets WHERE destination = 'hook'")
    assert tokens.fetchone()[0] < 1.0
    conn.close()


def test_digests_of_two_instances_hold_each_alert_once(pg_target: PgTarget) -> None:
    conn = open_state(pg_target)
    alerts = [make_alert(host=f"h{i}", rule="r") for i in range(40)]
    with transaction(conn):
        enqueue_alerts(conn, alerts, NOW)
    with serve_endpoint() as endpoint:
        config = _config(endpoint.url, digest_threshold=2, digest_max_alerts=7)
        services = [build_delivery_service(config, pg_target) for _ in range(2)]
        for service in services:
            service.start()
        try:
            wait_until_sent = time.monotonic() + 60
            while queue_depths(conn).get("hook") and time.monotonic() < wait_until_sent:
                time.sleep(0.05)
        finally:
            for service in services:
                service.stop()
        bodies = [r.json() for r in endpoint.accepted()]
    conn.close()
    hosts: list[str] = []
    for body in bodies:
        members = body["alerts"] if body.get("type") == "digest" else [body]
        hosts += [m["host"] for m in members]
    assert sorted(hosts) == sorted(f"h{i}" for i in range(40))
    assert any(body.get("type") == "digest" for body in bodies)


_DESTINATIONS = iter(range(10**9))
_SCHEMA: list[PgTarget] = []
_LOCK = threading.Lock()


def _shared_schema() -> PgTarget:
    """One schema for every example (each uses its own destination row)."""
    with _LOCK:
        if not _SCHEMA:
            _SCHEMA.append(PgTarget(need_postgresql(), unique_name("tcb")))
        return _SCHEMA[0]


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([15.0, 30.0, 60.0, 120.0, 240.0]),
    burst=st.integers(1, 5),
    steps=st.lists(st.integers(0, 24), min_size=1, max_size=30),
)
def test_the_shared_bucket_decides_as_the_in_memory_one(
    rate: float, burst: int, steps: list[int]
) -> None:
    """The same takes at the same times (eighths of a second: exact in binary) are
    granted or refused alike, with the same wait."""
    target = _shared_schema()
    conn = open_state(target)
    try:
        now = [NOW]
        reference = TokenBucket(rate, burst, lambda: now[0])
        shared = SharedTokenBucket(f"d{next(_DESTINATIONS)}", rate, burst)
        for step in steps:
            now[0] += step / 8
            wait = reference.wait_secs()
            assert shared.take(conn, now=now[0]) == (0.0 if reference.take() else wait)
    finally:
        conn.close()


def teardown_module() -> None:
    from tests.helpers.pgstate import drop_schema  # noqa: PLC0415

    for target in _SCHEMA:
        drop_schema(target.dsn, target.schema)


def test_repeats_claimed_by_two_instances_at_once_are_sent_once(pg_target: PgTarget) -> None:
    """Forty alerts of one dedup key (one connection, forty logged runs): the two
    instances claim twenty each and check the key at the same moment; one sends."""
    conn = open_state(pg_target)
    alerts = [make_alert(rule="r", counter=10 + n) for n in range(40)]
    assert len({a.id for a in alerts}) == 40
    with transaction(conn):  # queued now: the services' housekeeping keeps finished rows
        enqueue_alerts(conn, alerts, time.time())
    with serve_endpoint() as endpoint:
        endpoint.delay_secs = 0.3  # each send lasts: the other instance checks meanwhile
        doc: dict[str, Any] = {
            "sources": [{"path": "/nonexistent.log"}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": endpoint.url}],
            "rules": [{"name": "r", "notify": ["hook"], "remote_port": [4444]}],
            "delivery": {"poll_interval_secs": 0.05},
        }
        config = build_config(doc, "test.yaml", environ={})
        services = [build_delivery_service(config, pg_target) for _ in range(2)]
        for service in services:
            service.start()
        try:
            deadline = time.monotonic() + 60
            while queue_depths(conn).get("hook") and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for service in services:
                service.stop()
        sent = len(endpoint.accepted())
    states = conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    conn.close()
    assert sent == 1
    assert sorted(states) == [("sent", 1), ("suppressed", 39)]
