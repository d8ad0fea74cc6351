"""What an operator reads and changes in the state: outbox rows, counts, retries, purges.

These functions are the state side of ``status`` and ``outbox ...`` (and of the web
console), on either backend: the same SQL runs on SQLite and on PostgreSQL
(:mod:`alert_service.state.postgres`). Reads work on a read-only connection
(:func:`~alert_service.state.db.open_state_reader`) beside running instances;
writes use their own short transaction.

Row ids are the outbox's ``rowid`` (SQLite's rowid, a ``BIGSERIAL`` column on
PostgreSQL; stable for a row's life). The alert id
(``webhook-id``) of a row never changes, so a retried row is sent with the same id
and receivers drop a repeat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alert_service.state.db import StateConnection
from alert_service.state.outbox import transaction
from alert_service.state.postgres import PgConnection
from alert_service.state.silences import host_matches

__all__ = [
    "OUTBOX_STATES",
    "CheckpointInfo",
    "DestinationCounts",
    "OutboxEntry",
    "checkpoints",
    "destination_counts",
    "get_entry",
    "list_entries",
    "purge_sent",
    "retry_rows",
]

OUTBOX_STATES = ("pending", "sent", "dead", "suppressed", "silenced")
"""Every state an outbox row can be in (see :mod:`alert_service.state.outbox`)."""

RETRYABLE_STATES = ("dead", "silenced")
"""States ``outbox retry`` puts back to ``pending``."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row as an operator sees it.

    Attributes:
        id: the row id (``outbox show ID``).
        alert_id: the alert id, sent as ``webhook-id``.
        rule: rule name.
        destination: notifier name.
        state: one of :data:`OUTBOX_STATES`.
        attempts: delivery attempts so far.
        created_at: queued at, Unix seconds.
        next_attempt_at: next attempt (pending rows), Unix seconds.
        delivered_at: sent at, Unix seconds, or None.
        last_error: why the last attempt failed, or why it is silenced/suppressed.
        host: the alert's host identifier ("" when the record is unreadable).
        record: the stored record (:mod:`alert_service.state.record`) as JSON text.
    """

    id: int
    alert_id: str
    rule: str
    destination: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float
    delivered_at: float | None
    last_error: str
    host: str
    record: str

    def summary(self) -> dict[str, Any]:
        """The row without its record, JSON-ready."""
        doc = asdict(self)
        del doc["record"]
        return doc


@dataclass(frozen=True, slots=True)
class DestinationCounts:
    """Rows per state of one destination, and its last outcomes.

    Attributes:
        destination: notifier name.
        counts: state → rows (every state of :data:`OUTBOX_STATES`).
        last_success_at: the latest ``delivered_at``, Unix seconds, or None.
        last_error: the error of the newest row that failed (pending or dead), or "".
        last_error_alert_id: that row's alert id, or "".
    """

    destination: str
    counts: dict[str, int]
    last_success_at: float | None
    last_error: str
    last_error_alert_id: str


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """Where one source has been read up to.

    Attributes:
        source: the followed path (configured or matched by a glob).
        path: the file being read (a rotated name while draining it).
        offset: bytes read and committed.
        updated_at: when the last batch was committed, Unix seconds.
    """

    source: str
    path: str
    offset: int
    updated_at: float


_ENTRY_COLUMNS = (
    "rowid, alert_id, rule, destination, state, attempts, created_at, next_attempt_at,"
    " delivered_at, last_error, payload"
)


def _alert(payload: str) -> Mapping[str, Any]:
    """The stored alert of an outbox row's payload (empty when it is not one)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return {}
    alert = doc.get("alert", doc) if isinstance(doc, dict) else {}
    return alert if isinstance(alert, dict) else {}


def _entry(row: Sequence[Any]) -> OutboxEntry:
    payload = str(row[10])
    host = str(_alert(payload).get("host", ""))
    return OutboxEntry(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        int(row[5]),
        float(row[6]),
        float(row[7]),
        None if row[8] is None else float(row[8]),
        str(row[9]),
        host,
        payload,
    )


def list_entries(
    conn: StateConnection,
    *,
    state: str | None = None,
    rule: str | None = None,
    destination: str | None = None,
    since: float | None = None,
    host: str | None = None,
    limit: int = 100,
) -> list[OutboxEntry]:
    """Outbox rows matching every filter given, newest first.

    Args:
        state: one of :data:`OUTBOX_STATES`.
        rule: exact rule name.
        destination: exact notifier name.
        since: rows queued at or after this, Unix seconds.
        host: exact host identifier or ``hostname`` decoration, as a silence
            matches it (:func:`~alert_service.state.silences.host_matches`; filtered
            after reading: rows are scanned newest first until ``limit`` match).
        limit: most rows returned.
    """
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("state", state), ("rule", rule), ("destination", destination)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if since is not None:
        where.append("created_at >= ?")
        args.append(since)
    sql = f"SELECT {_ENTRY_COLUMNS} FROM outbox"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, rowid DESC"
    out: list[OutboxEntry] = []
    for row in conn.execute(sql, args):
        entry = _entry(row)
        if host is not None and not host_matches(_alert(entry.record), host):
            continue
        out.append(entry)
        if len(out) >= limit:
            break
    return out


def get_entry(conn: StateConnection, row_id: int) -> OutboxEntry | None:
    """The row with id ``row_id``, or None."""
    row = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM outbox WHERE rowid = ?", (row_id,)).fetchone()
    return None if row is None else _entry(row)


def destination_counts(
    conn: StateConnection, destinations: Iterable[str] = ()
) -> dict[str, DestinationCounts]:
    """Counts per state and last outcomes of every destination with rows, and of
    ``destinations`` (all zero when they have none)."""
    counts: dict[str, dict[str, int]] = {d: dict.fromkeys(OUTBOX_STATES, 0) for d in destinations}
    for dest, state, n in conn.execute(
        "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
    ):
        counts.setdefault(dest, dict.fromkeys(OUTBOX_STATES, 0))[state] = int(n)
    out: dict[str, DestinationCounts] = {}
    for dest in sorted(counts):
        sent = conn.execute(
            "SELECT MAX(delivered_at) FROM outbox WHERE destination = ? AND state = 'sent'",
            (dest,),
        ).fetchone()
        failed = conn.execute(
            "SELECT last_error, alert_id FROM outbox WHERE destination = ?"
            " AND state IN ('pending', 'dead') AND last_error != ''"
            " ORDER BY next_attempt_at DESC, rowid DESC LIMIT 1",
            (dest,),
        ).fetchone()
        out[dest] = DestinationCounts(
            dest,
            counts[dest],
            None if sent[0] is None else float(sent[0]),
            "" if failed is None else str(failed[0]),
            "" if failed is None else str(failed[1]),
        )
    return out


def checkpoints(conn: StateConnection) -> list[CheckpointInfo]:
    """Every source checkpoint, by source."""
    rows = conn.execute(
        "SELECT source, path, offset, updated_at FROM checkpoints ORDER BY source"
    ).fetchall()
    return [CheckpointInfo(str(s), str(p), int(o), float(u)) for s, p, o, u in rows]


def retry_rows(
    conn: StateConnection,
    now: float,
    *,
    row_ids: Sequence[int] = (),
    alert_ids: Sequence[str] = (),
    all_dead: bool = False,
    destination: str | None = None,
) -> list[OutboxEntry]:
    """Put rows back to ``pending``, due ``now``, attempts 0; their ids stay.

    Only rows in :data:`RETRYABLE_STATES` move (a pending or sent row is left as it is).

    Args:
        now: Unix seconds.
        row_ids: these rows.
        alert_ids: every row of these alert ids.
        all_dead: every ``dead`` row.
        destination: only rows of this notifier (with the others).

    Returns:
        The rows put back, as they were before.
    """
    where: list[str] = []
    args: list[Any] = []
    picks: list[str] = []
    if row_ids:
        picks.append(f"rowid IN ({','.join('?' * len(row_ids))})")
        args += list(row_ids)
    if alert_ids:
        picks.append(f"alert_id IN ({','.join('?' * len(alert_ids))})")
        args += list(alert_ids)
    if all_dead:
        picks.append("state = 'dead'")
    if not picks:
        return []
    where.append("(" + " OR ".join(picks) + ")")
    where.append(f"state IN ({','.join(repr(s) for s in RETRYABLE_STATES)})")
    if destination is not None:
        where.append("destination = ?")
        args.append(destination)
    clause = " AND ".join(where)
    with transaction(conn):
        found = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM outbox WHERE {clause}", args)
        rows = [_entry(r) for r in found]
        # On PostgreSQL the row keeps the claim of the worker that dead-lettered it:
        # given back, or no worker could take the row before the claim ran out.
        claim = ", claim_until = 0" if isinstance(conn, PgConnection) else ""
        conn.executemany(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            f" last_error = ''{claim} WHERE rowid = ?",
            [(now, r.id) for r in rows],
        )
    return rows


def purge_sent(conn: StateConnection, before: float) -> int:
    """Delete ``sent`` rows delivered before ``before`` (Unix seconds); return how many."""
    with transaction(conn):
        return int(
            conn.execute(
                "DELETE FROM outbox WHERE state = 'sent'"
                " AND COALESCE(delivered_at, created_at) < ?",
                (before,),
            ).rowcount
        )
