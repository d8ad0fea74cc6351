"""The alert produced by the match stage and its stable id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, cast

from alert_service.errors import ParseError
from alert_service.parse.event import Action, ColumnValue, Event
from alert_service.parse.names import DEFAULT_KNOWN_PACKS, parse_query_name

__all__ = ["Alert", "alert_id"]


def alert_id(event: Event) -> str:
    """Return the stable id of ``event``: 32 hex digits (128 bits of SHA-256).

    The id hashes (host identifier, query name, epoch, counter, action, row) with the
    row's typed columns sorted by name, so the same row gets the same id whether it was
    logged in event or batch form and with or without ``--logger_numerics``; re-reading
    a log after a crash gives the same ids (alerting-delivery-and-tailing.md §4.2 item 6).
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

    @classmethod
    def from_dict(
        cls,
        payload: Mapping[str, Any],
        notify: tuple[str, ...] = (),
        known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS,
    ) -> Alert:
        """Rebuild an alert from :meth:`as_dict` output (as stored in the outbox).

        ``pack``/``query`` are split again from the logged name with ``known_packs``;
        ``calendar_time`` is not stored and comes back as ``""``. The rebuilt event has
        the same :func:`alert_id` as the original.

        Args:
            payload: a value of :meth:`as_dict` (e.g. parsed from outbox JSON).
            notify: notifier names to put in the alert.
            known_packs: pack names for splitting ``pack_<pack>_<query>``.

        Raises:
            ParseError: a key is missing or has the wrong type.
        """
        try:
            name = str(payload["query"])
            action = str(payload["action"])
            if action not in ("added", "removed", "snapshot"):
                raise ParseError(f"stored alert: unknown action {action!r}")
            columns = cast(Mapping[str, ColumnValue], payload["connection"])
            decorations = cast(Mapping[str, str], payload.get("decorations") or {})
            parts = parse_query_name(name, known_packs)
            event = Event(
                name=name,
                pack=parts.pack,
                query=parts.query,
                host_identifier=str(payload["host"]),
                calendar_time="",
                unix_time=int(payload["unix_time"]),
                epoch=int(payload["epoch"]),
                counter=int(payload["counter"]),
                action=cast(Action, action),
                columns=MappingProxyType(dict(columns)),
                decorations=MappingProxyType(dict(decorations)),
            )
            return cls(str(payload["id"]), str(payload["rule"]), tuple(notify), event)
        except (KeyError, TypeError, ValueError) as err:
            raise ParseError(f"stored alert: {type(err).__name__}: {err}") from err

    @classmethod
    def members_from_dict(
        cls,
        payload: Mapping[str, Any],
        notify: tuple[str, ...] = (),
        known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS,
    ) -> list[Alert]:
        """The single alerts a stored baseline digest stands for, in log order.

        A payload with ``"kind": "baseline_digest"`` (state/baseline.py) carries
        ``rows`` and their ``alert_ids``; each member gets its own row and id and
        shares host, query, time and decorations. Any other payload gives
        ``[from_dict(payload)]``.

        Raises:
            ParseError: the payload is not a stored alert.
        """
        first = cls.from_dict(payload, notify, known_packs)
        if payload.get("kind") != "baseline_digest":
            return [first]
        rows = payload.get("rows")
        ids = payload.get("alert_ids")
        if not isinstance(rows, list) or not isinstance(ids, list) or len(rows) != len(ids):
            raise ParseError("stored digest: rows and alert_ids do not pair up")
        members = []
        for row, member_id in zip(rows, ids, strict=True):
            if not isinstance(row, dict):
                raise ParseError("stored digest: a row is not an object")
            event = replace(first.event, columns=MappingProxyType(dict(row)))
            members.append(cls(str(member_id), first.rule, first.notify, event))
        return members
