"""Aggregation windows in the state database, written with the batch's outbox rows.

Table ``aggregate_windows`` (created here when missing)::

    rule TEXT, group_key TEXT,    -- the rule name and the group's values as JSON
    state TEXT,                   -- Group.to_doc() as JSON (match/aggregate.py)
    updated_at REAL,              -- seconds since the Unix epoch
    PRIMARY KEY (rule, group_key)

:meth:`WindowStore.save` runs inside the pipeline's transaction (the one holding the
alerts and the source checkpoint), so after ``kill -9`` the stored windows are exactly
those of the last committed batch: the lines read again after the checkpoint count
once, and a crossing already queued has the same alert id (``INSERT OR IGNORE``).
:meth:`WindowStore.reload` puts the stored groups back into the
:class:`~alert_service.match.aggregate.Aggregator` at start and after a rolled-back
transaction. Rows of rules no longer configured are deleted at start.
"""

from __future__ import annotations

import json
import logging

from alert_service.logs import log_event
from alert_service.match.aggregate import Aggregator, Group
from alert_service.state.db import StateConnection

__all__ = ["WindowStore"]

_log = logging.getLogger(__name__)

_TABLE = """
CREATE TABLE IF NOT EXISTS aggregate_windows (
    rule TEXT NOT NULL,
    group_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rule, group_key)
)
"""


class WindowStore:
    """Persist an :class:`Aggregator`'s groups in ``aggregate_windows``.

    Args:
        conn: the state database (autocommit connection of :func:`open_state`).
        aggregator: the groups to keep.

    Raises:
        sqlite3.Error: the table cannot be created or read.
    """

    def __init__(self, conn: StateConnection, aggregator: Aggregator) -> None:
        self.conn = conn
        self.aggregator = aggregator
        conn.execute(_TABLE)
        names = aggregator.rule_names
        marks = ",".join("?" * len(names))
        conn.execute(f"DELETE FROM aggregate_windows WHERE rule NOT IN ({marks})", names)
        self.reload()

    def reload(self) -> int:
        """Replace the in-memory groups with the stored ones; return how many loaded."""
        aggregator = self.aggregator
        aggregator.clear()
        loaded = 0
        rows = self.conn.execute(
            "SELECT rule, group_key, state FROM aggregate_windows ORDER BY updated_at, rowid"
        ).fetchall()
        for rule, key, text in rows:
            try:
                group = Group.from_doc(json.loads(text))
            except (ValueError, KeyError, TypeError) as err:
                log_event(_log, logging.WARNING, "aggregate_window_unreadable", rule=rule,
                          reason=f"{type(err).__name__}: {err}")  # fmt: skip
                continue
            aggregator.load(rule, key, group)
            loaded += 1
        return loaded

    def save(self, now: float) -> None:
        """Write the changed groups and delete the dropped ones (caller's transaction).

        Args:
            now: wall time, seconds since the Unix epoch (``updated_at``).
        """
        changed, removed = self.aggregator.take_changed_groups()
        conn = self.conn
        if removed:
            conn.executemany(
                "DELETE FROM aggregate_windows WHERE rule = ? AND group_key = ?", removed
            )
        if changed:
            encoded: dict[int, str] = {}  # a row shared by several groups: encoded once
            conn.executemany(
                "INSERT INTO aggregate_windows (rule, group_key, state, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (rule, group_key) DO UPDATE SET"
                " state = excluded.state, updated_at = excluded.updated_at",
                [(rule, key, group.to_text(encoded), now) for rule, key, group in changed],
            )
