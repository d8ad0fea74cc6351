"""Durable state of the alert service, in one SQLite database.

Checkpoints of the sources and the outbox of alerts are written in the same
transaction, so a crash at any instant neither loses nor repeats an alert
(docs/design/delivery.md, docs/design/following-logs.md).
"""

from __future__ import annotations

from alert_service.state.db import SCHEMA_VERSION, open_state
from alert_service.state.outbox import enqueue_alerts

__all__ = ["SCHEMA_VERSION", "enqueue_alerts", "open_state"]
