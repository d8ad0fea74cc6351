"""Rows sent in batches end exactly as rows sent one by one (the simple reference).

A worker checks a batch of rows against silences and dedup keys at once and records
the sent ones in one transaction; with ``batch_rows=1`` it claims, checks, sends and
records every row on its own, as every row was handled before batches. For any queue
of alerts (repeats of a dedup key among them) and any mix of accepted, refused (404:
dead letter) and at first failing (503, then accepted: a retry) answers, both end
with the same state for every row, the same requests at the receiver, the same
failure count and the same pauses (a failure's backoff counts the failures since the
last success, so the successes before it in a batch are recorded first).
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

ACCEPT, REFUSE, FAIL_ONCE = 0, 1, 2
# (host, pid, answer): host and pid make the dedup key; a counter makes each id.
ROWS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from([ACCEPT, REFUSE, FAIL_ONCE])),
    min_size=1,
    max_size=30,
)


def _deliver(
    rows: list[tuple[int, int, int]], batch_rows: int
) -> tuple[dict[str, str], Counter[str], int, list[float]]:
    alerts = [
        make_alert(host=f"h{host}", pid=900 + pid, counter=10 + n)
        for n, (host, pid, _) in enumerate(rows)
    ]
    answers = {a.id: answer for a, (_, _, answer) in zip(alerts, rows, strict=True)}
    tried: Counter[str] = Counter()

    def respond(request: Request) -> Answer:
        alert_id = request.headers["webhook-id"]
        tried[alert_id] += 1
        answer = answers[alert_id]
        if answer == FAIL_ONCE:
            return Answer(503 if tried[alert_id] == 1 else 200)
        return Answer(200 if answer == ACCEPT else 404)

    with tempfile.TemporaryDirectory() as tmp, serve_endpoint(respond=respond) as endpoint:
        conn = open_state(str(Path(tmp) / "state.sqlite3"))
        clock = FakeClock()
        with transaction(conn):
            enqueue_alerts(conn, alerts, clock.time())
        notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
        worker = DestinationWorker(
            notifier, str(Path(tmp) / "state.sqlite3"), POLICY, DestinationSettings(),
            clock=clock, batch_rows=batch_rows, rng=lambda: 1.0,
        )  # fmt: skip
        pauses: list[float] = []  # how long the worker waited, each time it did
        for _ in range(200):
            if not queue_depths(conn):
                break
            wait = worker.step(conn)
            if wait:
                pauses.append(round(wait, 6))
            clock.advance(wait)
        states = dict(conn.execute("SELECT alert_id, state FROM outbox").fetchall())
        conn.close()
        notifier.close()
        requests = Counter(r.headers["webhook-id"] for r in endpoint.requests)
    return states, requests, worker.consecutive_failures, pauses


@settings(max_examples=30, deadline=None)
@given(rows=ROWS)
def test_batches_end_as_rows_one_by_one(rows: list[tuple[int, int, int]]) -> None:
    batched = _deliver(rows, batch_rows=20)
    assert batched == _deliver(rows, batch_rows=1)
    states, requests, _, _ = batched
    assert "pending" not in states.values()
    assert set(requests.values()) <= {1, 2}  # a row is tried again only after a 503
