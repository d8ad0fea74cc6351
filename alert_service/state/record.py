"""The outbox record: one versioned codec for what an outbox row carries.

A row's ``payload`` column holds one record, written by the pipeline
(:func:`encode_record`) and read by the delivery workers (:func:`decode_record`). It
carries everything delivery needs, so a worker never reaches back to the parse stage
(query-name splitting) or to the rules (dedup windows). Shape, version 1::

    {"v": 1,
     "alert": {Alert.as_dict() of the alert, or of a digest's first row},
     "name": {"pack": str | null, "query": str, "calendar_time": str},
     "dedup_window_secs": float | null,       # the rule's own; null = delivery's
     "digest": {"rows": [{column: value}], "alert_ids": [str]},   # baseline digests
     "aggregate": {AggregateAlert.aggregate_doc()}}                # aggregation rules

Records written before versioning (no ``"v"``: the bare :meth:`Alert.as_dict`, with
``"kind": "baseline_digest"``, ``"rows"`` and ``"alert_ids"`` for a digest) still
decode: their query name is split with the default pack names and their window is the
delivery default; :func:`upgrade_records` rewrites the pending ones once with the
configured pack names and rule windows, so existing state databases keep their
behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, cast

from alert_service.errors import RecordError
from alert_service.match import SEVERITIES, Alert, Severity
from alert_service.match.aggregate import AggregateAlert
from alert_service.parse.event import Action, ColumnValue, Event
from alert_service.parse.names import DEFAULT_KNOWN_PACKS, parse_query_name
from alert_service.state.baseline import DigestAlert
from alert_service.state.db import StateConnection

__all__ = [
    "RECORD_VERSION",
    "OutboxRecord",
    "decode_record",
    "encode_record",
    "upgrade_records",
]

RECORD_VERSION = 1
"""Version written by :func:`encode_record` (the ``"v"`` key)."""

_ACTIONS = ("added", "removed", "snapshot")


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """A decoded outbox record.

    Attributes:
        alert: the queued alert (for a baseline digest: its first row, with the
            digest's id).
        members: the single alerts it stands for, in log order: ``(alert,)`` unless
            it is a baseline digest, whose rows each come with their own id.
        dedup_window_secs: the rule's own dedup window in seconds, or None for the
            delivery default.
        digest: True for a baseline digest.
    """

    alert: Alert
    members: tuple[Alert, ...]
    dedup_window_secs: float | None
    digest: bool = False

    def as_alert(self) -> Alert:
        """The alert as it was queued: a :class:`DigestAlert` for a baseline digest."""
        if not self.digest:
            return self.alert
        alert = self.alert
        return DigestAlert(
            alert.id,
            alert.rule,
            alert.notify,
            alert.event,
            rows=tuple(m.event for m in self.members),
            member_ids=tuple(m.id for m in self.members),
            severity=alert.severity,
        )


def encode_record(alert: Alert, dedup_window_secs: float | None = None) -> str:
    """Return the version-1 record of ``alert`` as compact JSON text.

    Args:
        alert: an alert, or a :class:`~alert_service.state.baseline.DigestAlert`.
        dedup_window_secs: the rule's own window in seconds; None = delivery default.
    """
    event = alert.event
    doc: dict[str, Any] = {
        "v": RECORD_VERSION,
        "alert": Alert.as_dict(alert),
        "name": {"pack": event.pack, "query": event.query, "calendar_time": event.calendar_time},
        "dedup_window_secs": dedup_window_secs,
    }
    if isinstance(alert, AggregateAlert):
        doc["aggregate"] = alert.aggregate_doc()
    if isinstance(alert, DigestAlert):
        doc["digest"] = {
            "rows": [dict(row.columns) for row in alert.rows],
            "alert_ids": list(alert.member_ids),
        }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def decode_record(
    text: str, notify: tuple[str, ...] = (), known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS
) -> OutboxRecord:
    """Decode a stored record (version 1, or written before versioning).

    Args:
        text: the ``payload`` column.
        notify: notifier names to put in the decoded alerts.
        known_packs: pack names for splitting the query name of a record written
            before versioning (version 1 stores the split).

    Raises:
        RecordError: not JSON, not a record, an unknown version, or a key missing or
            of the wrong type.
    """
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise RecordError(f"stored record: not JSON: {err}") from err
    if not isinstance(doc, dict):
        raise RecordError("stored record: not an object")
    version = doc.get("v")
    try:
        if version is None:
            return _decode_legacy(doc, notify, frozenset(known_packs))
        if version != RECORD_VERSION:
            raise RecordError(f"stored record: unknown version {version!r}")
        name = doc["name"]
        window = doc["dedup_window_secs"]
        alert = _alert(doc["alert"], notify, name["pack"], name["query"], name["calendar_time"])
        digest = doc.get("digest")
        aggregate = doc.get("aggregate")
        if aggregate is not None:
            alert = _aggregate_alert(alert, aggregate)
        if digest is None:
            return OutboxRecord(alert, (alert,), float(window) if window is not None else None)
        members = _members(alert, digest["rows"], digest["alert_ids"])
        return OutboxRecord(alert, members, float(window) if window is not None else None, True)
    except (KeyError, TypeError, ValueError) as err:
        raise RecordError(f"stored record: {type(err).__name__}: {err}") from err


def _decode_legacy(
    doc: Mapping[str, Any], notify: tuple[str, ...], known_packs: frozenset[str]
) -> OutboxRecord:
    """A record written before versioning: the bare ``Alert.as_dict()`` (+ digest keys)."""
    parts = parse_query_name(str(doc["query"]), known_packs)
    alert = _alert(doc, notify, parts.pack, parts.query, "")
    if doc.get("kind") != "baseline_digest":
        return OutboxRecord(alert, (alert,), None)
    return OutboxRecord(alert, _members(alert, doc.get("rows"), doc.get("alert_ids")), None, True)


def _alert(
    doc: Mapping[str, Any],
    notify: tuple[str, ...],
    pack: str | None,
    query: str,
    calendar_time: str,
) -> Alert:
    action = str(doc["action"])
    if action not in _ACTIONS:
        raise RecordError(f"stored record: unknown action {action!r}")
    columns = cast(Mapping[str, ColumnValue], doc["connection"])
    decorations = cast(Mapping[str, str], doc.get("decorations") or {})
    logged = cast(Mapping[str, str], doc.get("logged") or {})
    event = Event(
        name=str(doc["query"]),
        pack=None if pack is None else str(pack),
        query=str(query),
        host_identifier=str(doc["host"]),
        calendar_time=str(calendar_time),
        unix_time=int(doc["unix_time"]),
        epoch=int(doc["epoch"]),
        counter=int(doc["counter"]),
        action=cast(Action, action),
        columns=MappingProxyType(dict(columns)),
        decorations=MappingProxyType(dict(decorations)),
        logged=MappingProxyType(dict(logged)),
    )
    severity = doc.get("severity")
    return Alert(
        str(doc["id"]),
        str(doc["rule"]),
        tuple(notify),
        event,
        severity=cast(Severity, severity) if severity in SEVERITIES else None,
    )


_AGGREGATE_KEYS = ("type", "group", "count", "first_time", "last_time", "sample")


def _aggregate_alert(alert: Alert, doc: Mapping[str, Any]) -> AggregateAlert:
    """The alert of an aggregation rule, from a record's ``aggregate`` part."""
    detail = {k: v for k, v in doc.items() if k not in _AGGREGATE_KEYS}
    return AggregateAlert(
        alert.id,
        alert.rule,
        alert.notify,
        alert.event,
        severity=alert.severity,
        kind=str(doc["type"]),
        group=MappingProxyType(dict(doc["group"])),
        count=int(doc["count"]),
        first_time=int(doc["first_time"]),
        last_time=int(doc["last_time"]),
        sample=tuple(MappingProxyType(dict(row)) for row in doc["sample"]),
        detail=MappingProxyType(detail),
    )


def _members(first: Alert, rows: object, ids: object) -> tuple[Alert, ...]:
    """The single alerts of a baseline digest: each row with its own id."""
    if not isinstance(rows, list) or not isinstance(ids, list) or len(rows) != len(ids):
        raise RecordError("stored digest: rows and alert_ids do not pair up")
    members = []
    for row, member_id in zip(rows, ids, strict=True):
        if not isinstance(row, dict):
            raise RecordError("stored digest: a row is not an object")
        event = replace(first.event, columns=MappingProxyType(dict(row)))
        members.append(
            Alert(str(member_id), first.rule, first.notify, event, severity=first.severity)
        )
    return tuple(members)


def upgrade_records(
    conn: StateConnection,
    known_packs: Iterable[str],
    rule_windows: Mapping[str, float],
) -> int:
    """Rewrite pending records written before versioning as version 1.

    Done once at start by the producer, which knows the configured pack names and
    rule windows; rows that do not decode are left for the worker to dead-letter.

    Args:
        conn: the state database (autocommit; one transaction is used).
        known_packs: pack names for splitting query names.
        rule_windows: rule name → its own ``dedup_window_secs``.

    Returns:
        The number of rows rewritten.
    """
    packs = frozenset(known_packs)
    rows: Sequence[tuple[int, str, str]] = conn.execute(
        "SELECT rowid, rule, payload FROM outbox WHERE state = 'pending'"
        " AND payload NOT LIKE '{\"v\":%'"
    ).fetchall()
    updates: list[tuple[str, int]] = []
    for rowid, rule, payload in rows:
        try:
            record = decode_record(payload, (), packs)
        except RecordError:
            continue
        updates.append((encode_record(record.as_alert(), rule_windows.get(rule)), rowid))
    if updates:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("UPDATE outbox SET payload = ? WHERE rowid = ?", updates)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(updates)
