"""The alert produced by the match stage and its stable id."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from alert_service.match.spec import Severity
from alert_service.parse.event import Event

__all__ = ["Alert", "HostNames", "alert_id", "host_names"]

_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_NAME_DECORATIONS = ("fqdn", "hostname", "computer_name")


class HostNames(NamedTuple):
    """How an alert names its host.

    Attributes:
        name: what people call it: the ``fqdn`` decoration, else ``hostname``, else
            ``computer_name`` (osquery ``system_info`` columns, as decorations; Fleet's
            default decorators add ``hostname`` and ``host_uuid``), else the
            ``hostIdentifier``.
        identifier: the line's ``hostIdentifier`` (osquery ``--host_identifier``:
            the hostname by default, the UUID with ``uuid``, which Fleet's fleetd uses).
        uuid: the ``host_uuid`` decoration, else the identifier when it is a UUID,
            else None.
    """

    name: str
    identifier: str
    uuid: str | None


def host_names(event: Event) -> HostNames:
    """Return the :class:`HostNames` of ``event``'s host."""
    deco = event.decorations
    identifier = event.host_identifier
    name = next((deco[k] for k in _NAME_DECORATIONS if deco.get(k)), identifier)
    uuid = deco.get("host_uuid") or (identifier if _UUID.fullmatch(identifier) else None)
    return HostNames(name, identifier, uuid)


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
        severity: the rule's severity, None when the rule sets none.
    """

    id: str
    rule: str
    notify: tuple[str, ...]
    event: Event
    severity: Severity | None = field(default=None, kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        """Return the generic JSON payload of the alert (a new dict each call).

        Shape::

            {"id": str, "rule": str, "severity": str | None, "host": str,
             "host_name": str, "host_uuid": str | None, "query": str, "action": str,
             "unix_time": int, "epoch": int, "counter": int,
             "connection": {column: int | str | None}, "decorations": {name: str}}

        plus ``"logged": {column: str}`` when osquery's ``\\xNN`` escapes were decoded
        in some text columns: their text exactly as logged (``connection`` has the
        decoded text). ``host`` is the host identifier, ``query`` the full logged query name and
        ``unix_time`` seconds since the Unix epoch.
        """
        ev = self.event
        names = host_names(ev)
        doc: dict[str, Any] = {
            "id": self.id,
            "rule": self.rule,
            "severity": self.severity,
            "host": ev.host_identifier,
            "host_name": names.name,
            "host_uuid": names.uuid,
            "query": ev.name,
            "action": ev.action,
            "unix_time": ev.unix_time,
            "epoch": ev.epoch,
            "counter": ev.counter,
            "connection": dict(ev.columns.items()),  # a Row: its typed items, not 22 lookups
            "decorations": dict(ev.decorations),
        }
        if ev.logged:
            doc["logged"] = dict(ev.logged)
        return doc
