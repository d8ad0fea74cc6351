"""A baseline digest (one outbox row for a host's new rows) reaches receivers whole."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from deliver_support import FakeClock, ScriptedEndpoint, make_alert, serve_endpoint

from alert_service.deliver import DestinationSettings, DestinationWorker
from alert_service.deliver.retry import RetryPolicy
from alert_service.notify import (
    WebhookNotifier,
)
from alert_service.notify.base import Notifier
from alert_service.notify.pagerduty import PagerDutyNotifier
from alert_service.ops import ServiceMetrics
from alert_service.secret import Secret
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.baseline import DigestAlert
from alert_service.state.outbox import queue_depths, transaction
from alert_service.stats import Stats

POLICY = RetryPolicy(
    initial_backoff_secs=1.0,
    max_backoff_secs=60.0,
    max_age_secs=3600.0,
    max_retry_after_secs=300.0,
    dedup_window_secs=0.0,
    poll_interval_secs=0.5,
)


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with serve_endpoint() as state:
        yield state


def _digest(notify: str) -> DigestAlert:
    members = [
        make_alert(rule="ioc", notify=(notify,), counter=0, remote_address=f"203.0.113.{i}")
        for i in (1, 2, 3)
    ]
    return DigestAlert(
        "digest-test-0001",
        "ioc",
        (notify,),
        members[0].event,
        tuple(m.event for m in members),
        tuple(m.id for m in members),
    )


def _deliver(tmp_path: Path, notifier: Notifier, digest: DigestAlert) -> sqlite3.Connection:
    path = str(tmp_path / "state.sqlite3")
    conn = open_state(path)
    clock = FakeClock()
    stats = Stats()
    worker = DestinationWorker(
        notifier, path, POLICY, DestinationSettings(),
        metrics=ServiceMetrics(stats), stats=stats, clock=clock, rng=lambda: 1.0,
    )  # fmt: skip
    with transaction(conn):
        assert enqueue_alerts(conn, [digest], clock.time()) == 1
    for _ in range(50):
        if not queue_depths(conn):
            break
        clock.advance(worker.step(conn))
    return conn


def test_webhook_gets_one_digest_listing_every_row(
    tmp_path: Path, endpoint: ScriptedEndpoint
) -> None:
    notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
    conn = _deliver(tmp_path, notifier, _digest("hook"))
    notifier.close()
    (request,) = endpoint.accepted()
    body = request.json()
    assert body["type"] == "digest" and body["count"] == 3
    remotes = [a["connection"]["remote_address"] for a in body["alerts"]]
    assert remotes == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert request.headers["webhook-id"] == "digest-test-0001"
    assert conn.execute("SELECT state FROM outbox").fetchall() == [("sent",)]


def test_notifier_without_digest_format_sends_each_row_with_its_own_key(
    tmp_path: Path, endpoint: ScriptedEndpoint
) -> None:
    notifier = PagerDutyNotifier.from_config(
        "pd", {"routing_key": Secret("R0UT1NGKEY", "env:PD_KEY"), "url": endpoint.url}
    )
    digest = _digest("pd")
    conn = _deliver(tmp_path, notifier, digest)
    notifier.close()
    bodies = [r.json() for r in endpoint.accepted()]
    assert len(bodies) == 3
    remotes = [b["payload"]["custom_details"]["connection"]["remote_address"] for b in bodies]
    assert remotes == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert len({b["dedup_key"] for b in bodies}) == 3
    assert conn.execute("SELECT state FROM outbox").fetchall() == [("sent",)]
