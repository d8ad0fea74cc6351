"""The alert produced by the match stage and its stable id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from alert_service.parse.event import Event

__all__ = ["Alert", "alert_id"]


def alert_id(event: Event) -> str:
    """Return the stable id of ``event``: 32 hex digits (128 bits of SHA-256).

    The id hashes (host identifier, query name, epoch, counter, action, row) with the
    row's typed columns sorted by name, so the same row gets the same id whether it was
    logged in event or batch form and with or without ``--logger_numerics``; re-reading
    a log after a crash gives the same ids (docs/design/delivery.md, "Outbox").
    Receivers use it as an idempotency key.
    """
    row = sorted(event.columns.items())
    key = [event.host_identifier, event.name, event.epoch, event.counter, event.action, row]
    blob = json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule matching one event.

    Attributes:
        id: :func:`alert_id` of the event (shared by all rules matching that event).
        rule: name of the rule that matched.
        notify: names of the notifiers to send it to, in rule order.
        event: the matched event.
    """

    id: str
    rule: str
    notify: tuple[str, ...]
    event: Event

    def as_dict(self) -> dict[str, Any]:
        """Return the generic JSON payload of the alert (a new dict each call).

        Shape::

            {"id": str, "rule": str, "host": str, "query": str, "action": str,
             "unix_time": int, "epoch": int, "counter": int,
             "connection": {column: int | str | None}, "decorations": {name: str}}

        ``host`` is the host identifier, ``query`` the full logged query name and
        ``unix_time`` seconds since the Unix epoch.
        """
        ev = self.event
        return {
            "id": self.id,
            "rule": self.rule,
            "host": ev.host_identifier,
            "query": ev.name,
            "action": ev.action,
            "unix_time": ev.unix_time,
            "epoch": ev.epoch,
            "counter": ev.counter,
            "connection": dict(ev.columns),
            "decorations": dict(ev.decorations),
        }
