"""Putting alerts into the outbox.

Call :func:`enqueue_alerts` inside the transaction that also advances the
source checkpoint. Rows are keyed by (alert id, rule, destination) and
inserted with ``INSERT OR IGNORE``, so re-reading a line after a crash adds
nothing twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from alert_service.match import Alert

__all__ = ["enqueue_alerts"]


def enqueue_alerts(conn: sqlite3.Connection, alerts: Iterable[Alert], now: float) -> int:
    """Insert one pending outbox row per (alert, destination).

    Args:
        conn: the state database, inside the caller's transaction.
        alerts: matched alerts; each goes to every notifier in ``alert.notify``.
        now: seconds since the Unix epoch; also the first attempt time.

    Returns:
        rows actually inserted (0 for alerts already in the outbox).
    """
    inserted = 0
    for alert in alerts:
        payload = json.dumps(alert.as_dict(), ensure_ascii=False, separators=(",", ":"))
        for destination in alert.notify:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO outbox (alert_id, rule, destination, payload,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
                (alert.id, alert.rule, destination, payload, now, now),
            )
            inserted += cursor.rowcount
    return inserted
