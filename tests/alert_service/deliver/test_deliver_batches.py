"""Rows sent in batches end exactly as rows sent one by one (the simple reference).

A worker checks a batch of rows against silences and dedup keys at once and records
the sent ones in one transaction; with ``batch_rows=1`` it claims, checks, sends and
records every row on its own, as every row was handled before batches. For any queue
of alerts (repeats of a dedup key among them) and any mix of accepted and refused
(404: dead letter) answers, both end with the same state for every row and the same
requests at the receiver.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from deliver_support import Answer, FakeClock, Request, make_alert, serve_endpoint
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.deliver import DestinationSettings, DestinationWorker
from alert_service.deliver.retry import RetryPolicy
from alert_service.notify import WebhookNotifier
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import queue_depths, transaction

POLICY = RetryPolicy(dedup_window_secs=600.0, poll_interval_secs=0.5)

# (host, pid, accepted): host and pid make the dedup key; a counter makes each id.
ROWS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans()), min_size=1, max_size=30
)


def _deliver(
    rows: list[tuple[int, int, bool]], batch_rows: int
) -> tuple[dict[str, str], Counter[str]]:
    alerts = [
        make_alert(host=f"h{host}", pid=900 + pid, counter=10 + n)
        for n, (host, pid, _) in enumerate(rows)
    ]
    accepted = {a.id: ok for a, (_, _, ok) in zip(alerts, rows, strict=True)}

    def respond(request: Request) -> Answer:
        return Answer(200 if accepted[request.headers["webhook-id"]] else 404)

    with tempfile.TemporaryDirectory() as tmp, serve_endpoint(respond=respond) as endpoint:
        conn = open_state(str(Path(tmp) / "state.sqlite3"))
        clock = FakeClock()
        with transaction(conn):
            enqueue_alerts(conn, alerts, clock.time())
        notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
        worker = DestinationWorker(
            notifier, str(Path(tmp) / "state.sqlite3"), POLICY, DestinationSettings(),
            clock=clock, batch_rows=batch_rows,
        )  # fmt: skip
        for _ in range(200):
            if not queue_depths(conn):
                break
            clock.advance(worker.step(conn))
        states = dict(conn.execute("SELECT alert_id, state FROM outbox").fetchall())
        conn.close()
        notifier.close()
        requests = Counter(r.headers["webhook-id"] for r in endpoint.requests)
    return states, requests


@settings(max_examples=30, deadline=None)
@given(rows=ROWS)
def test_batches_end_as_rows_one_by_one(rows: list[tuple[int, int, bool]]) -> None:
    batched = _deliver(rows, batch_rows=20)
    assert batched == _deliver(rows, batch_rows=1)
    states, requests = batched
    assert "pending" not in states.values()
    assert set(requests.values()) <= {1}  # no row is sent twice
