"""Operator silences: "send nothing that matches these for a while" (``silence add``).

A silence has matchers — ``rule`` (exact name), ``host`` (the host identifier or the
``hostname`` decoration, exact), ``process`` (the ``name`` column, exact) and
``remote`` (a CIDR holding ``remote_address``) — of which every one given must match,
a comment, and an end time. It lives in the ``operator_silences`` table, so it
survives restarts, and it ends by itself: a silence whose ``ends_at`` has passed
matches nothing (``silence expire`` sets ``ends_at`` to now).

The delivery workers check every due row against the silences in force
(:func:`silence_for`); a match is stored as state ``silenced`` with
``silence <id>: <comment>`` as its reason and is not sent — it stays visible in
``outbox list`` and ``status`` and can be sent later with ``outbox retry``.

Times are Unix seconds. The matchers are the ones Alertmanager's silences use in
spirit (https://prometheus.io/docs/alerting/latest/alertmanager/#silences), on this
service's alert fields.
"""

from __future__ import annotations

import ipaddress
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alert_service.match.addresses import parse_address
from alert_service.state.db import StateConnection
from alert_service.state.outbox import transaction

__all__ = [
    "Silence",
    "add_silence",
    "expire_silence",
    "host_matches",
    "list_silences",
    "silence_for",
    "silences_in_force",
]


def host_matches(alert: Mapping[str, Any], host: str) -> bool:
    """True when ``host`` is ``alert``'s host identifier or its ``hostname`` decoration
    (exact; :meth:`Alert.as_dict` shape). On Fleet the identifier is the host's UUID,
    so people name the host by its ``hostname``; ``silence add --host`` and
    ``outbox list --host`` take either."""
    if alert.get("host") == host:
        return True
    decorations = alert.get("decorations")
    return isinstance(decorations, Mapping) and decorations.get("hostname") == host


@dataclass(frozen=True, slots=True)
class Silence:
    """One operator silence (a row of ``operator_silences``).

    Attributes:
        id: its number (``silence expire ID``).
        created_at: when it was added, Unix seconds.
        ends_at: when it stops matching, Unix seconds.
        rule: rule name to match, or None for any.
        host: host identifier or hostname to match, or None for any.
        process: process name to match, or None for any.
        remote: CIDR the remote address must be in, or None for any.
        comment: why (required).
    """

    id: int
    created_at: float
    ends_at: float
    rule: str | None
    host: str | None
    process: str | None
    remote: str | None
    comment: str

    def in_force(self, now: float) -> bool:
        """True while ``now`` is before :attr:`ends_at`."""
        return now < self.ends_at

    def matches(self, alert: Mapping[str, Any]) -> bool:
        """True when every matcher given matches ``alert`` (:meth:`Alert.as_dict` shape)."""
        if self.rule is not None and alert.get("rule") != self.rule:
            return False
        if self.host is not None and not host_matches(alert, self.host):
            return False
        connection = alert.get("connection") or {}
        if self.process is not None and connection.get("name") != self.process:
            return False
        if self.remote is not None:
            address = parse_address(connection.get("remote_address"))
            network = ipaddress.ip_network(self.remote, strict=False)
            if address is None or address.version != network.version:
                return False
            if address not in network:
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """The silence as a JSON-ready dict (the field names above)."""
        return asdict(self)


_COLUMNS = "id, created_at, ends_at, rule, host, process, remote, comment"


def add_silence(
    conn: StateConnection,
    *,
    now: float,
    duration_secs: float,
    comment: str,
    rule: str | None = None,
    host: str | None = None,
    process: str | None = None,
    remote: str | None = None,
) -> Silence:
    """Store a new silence in force from ``now`` for ``duration_secs``.

    Raises:
        ValueError: no matcher given, an empty comment, a duration not above 0, or
            ``remote`` that is not a CIDR.
    """
    if rule is None and host is None and process is None and remote is None:
        raise ValueError("give at least one of --rule, --host, --process, --remote")
    if not comment.strip():
        raise ValueError("a comment is required (who and why)")
    if duration_secs <= 0:
        raise ValueError("the duration must be above 0")
    if remote is not None:
        remote = str(ipaddress.ip_network(remote, strict=False))
    insert = (
        "INSERT INTO operator_silences (created_at, ends_at, rule, host, process, remote,"
        " comment) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    values = (now, now + duration_secs, rule, host, process, remote, comment)
    with transaction(conn):
        if isinstance(conn, sqlite3.Connection):
            silence_id = conn.execute(insert, values).lastrowid
        else:  # PostgreSQL: no lastrowid, the id comes back with the row
            silence_id = conn.execute(insert + " RETURNING id", values).fetchone()[0]
    return Silence(
        int(silence_id or 0), now, now + duration_secs, rule, host, process, remote, comment
    )


def list_silences(conn: StateConnection, now: float, *, all: bool = False) -> list[Silence]:
    """Silences in force at ``now`` (every stored one when ``all``), newest first."""
    where = "" if all else " WHERE ends_at > ?"
    args: tuple[float, ...] = () if all else (now,)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM operator_silences{where} ORDER BY id DESC", args
    ).fetchall()
    return [Silence(*row) for row in rows]


def silences_in_force(conn: StateConnection, now: float) -> list[Silence]:
    """The silences in force at ``now`` (for the workers: one query per batch)."""
    return list_silences(conn, now)


def expire_silence(conn: StateConnection, silence_id: int, now: float) -> bool:
    """End silence ``silence_id`` at ``now``; False when no such silence is in force."""
    with transaction(conn):
        cursor = conn.execute(
            "UPDATE operator_silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
            (now, silence_id, now),
        )
    return cursor.rowcount > 0


def silence_for(silences: Sequence[Silence], alert: Mapping[str, Any]) -> Silence | None:
    """The first of ``silences`` matching ``alert``, or None."""
    for silence in silences:
        if silence.matches(alert):
            return silence
    return None
