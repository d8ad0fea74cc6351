"""Documents an operator reads: the status, one outbox row with its rendered payload,
and the outcome of a test notification. Shared by the command line and the console.

Every function returns plain JSON-ready dicts; times are Unix seconds.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from alert_service.config import Config
from alert_service.errors import NotifyError, RecordError
from alert_service.match import Alert
from alert_service.notify import DEFAULT_REGISTRY, NotifierRegistry
from alert_service.notify.base import Notifier
from alert_service.notify.http import HttpNotifier
from alert_service.parse import Event
from alert_service.secret import Secret
from alert_service.source import SourceConfig
from alert_service.state.db import StateConnection, StateTarget
from alert_service.state.inspect import OutboxEntry, checkpoints, destination_counts
from alert_service.state.leases import MEMBER_PREFIX, MEMBER_PRUNE_AFTER_SECS, lease_rows
from alert_service.state.lock import LOCK_FILE
from alert_service.state.postgres import PgConnection
from alert_service.state.record import decode_record
from alert_service.state.silences import list_silences

__all__ = [
    "entry_doc",
    "run_text",
    "running_pid",
    "state_path",
    "state_target",
    "status_doc",
    "test_notification",
]

TEST_RULE = "test-notifier"
"""Rule name of a synthetic test alert."""
TEST_HOST = "tracked-connections-test"
"""Host identifier of a synthetic test alert."""


def state_target(config: Config) -> StateTarget:
    """The state of ``config``: the SQLite file, or the PostgreSQL schema (``state``)."""
    return config.state.target(config.state_dir)


def state_path(config: Config) -> str:
    """Where the state of ``config`` is, for people: the SQLite file, or the
    PostgreSQL schema (never the DSN, which may hold a password)."""
    return config.state.describe(config.state_dir)


def running_pid(config: Config) -> int | None:
    """The pid written in the state directory's lock file when that process is alive."""
    try:
        with open(os.path.join(config.state_dir, LOCK_FILE), encoding="ascii") as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def run_text(doc: Mapping[str, Any]) -> str:
    """What runs, for the ``run:`` line of a :func:`status_doc` document.

    SQLite: ``pid N`` or ``not running`` (the state directory's lock). PostgreSQL: the
    live members, ``2 live instances: a, b`` or ``no live cluster member`` (instances
    take no lock file there; one that reads only files holds no membership either).
    """
    if "instances" in doc:
        names = doc["instances"]
        if not names:
            return "no live cluster member"
        noun = "instance" if len(names) == 1 else "instances"
        return f"{len(names)} live {noun}: {', '.join(names)}"
    pid = doc["running_pid"]
    return f"pid {pid}" if pid else "not running"


def status_doc(config: Config, conn: StateConnection, now: float) -> dict[str, Any]:
    """The status: sources, destinations, silences in force, the running pid.

    Shape::

        {"state": path, "running_pid": int | null, "now": float,
         "sources": [{"source", "path", "offset", "size", "lag_bytes", "last_line_at"}],
         "destinations": {name: {"pending", "sent", "dead", "suppressed", "silenced",
                                 "last_success_at", "last_error", "last_error_alert_id"}},
         "silences": [Silence.as_dict()],
         "instances": [str],                                          # PostgreSQL only
         "leases": [{"name", "owner", "token", "expires_in_secs"}],  # PostgreSQL only
         "expired_members": int}                                      # PostgreSQL only

    ``size`` and ``lag_bytes`` (bytes written but not yet read) are null when the file
    cannot be stat'ed (a stream partition's checkpoint names a subject, not a file);
    a configured source without a checkpoint is listed with ``offset`` null (nothing
    read yet). On the PostgreSQL state, ``state`` names the schema, ``running_pid`` is
    this host's ``run`` when it holds a lock file (cluster instances take none: null),
    ``instances`` names the instances whose membership is live (sorted; an instance
    holds one while it reads a ``nats`` source with partitions), ``leases`` lists
    the live memberships (``member:<instance>``) and every partition's lease
    (:mod:`alert_service.state.leases`), and ``expired_members`` counts the
    memberships that ended (expired, or left at a clean stop) within the last
    :data:`~alert_service.state.leases.MEMBER_PRUNE_AFTER_SECS` (older ones are
    deleted at the next heartbeat of an instance, and not counted).
    """
    sources: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cp in checkpoints(conn):
        seen.add(cp.source)
        size: int | None
        try:
            size = os.stat(cp.path).st_size
        except OSError:
            size = None
        sources.append(
            {
                "source": cp.source,
                "path": cp.path,
                "offset": cp.offset,
                "size": size,
                "lag_bytes": None if size is None else max(0, size - cp.offset),
                "last_line_at": cp.updated_at,
            }
        )
    for source in config.sources:
        if isinstance(source, SourceConfig) and not source.glob and source.path not in seen:
            sources.append(
                {
                    "source": source.path,
                    "path": source.path,
                    "offset": None,
                    "size": None,
                    "lag_bytes": None,
                    "last_line_at": None,
                }
            )
    counts = destination_counts(conn, (n.name for n in config.notifiers))
    destinations = {
        name: {
            **c.counts,
            "last_success_at": c.last_success_at,
            "last_error": c.last_error,
            "last_error_alert_id": c.last_error_alert_id,
        }
        for name, c in counts.items()
    }
    doc: dict[str, Any] = {
        "state": state_path(config),
        "running_pid": running_pid(config),
        "now": now,
        "sources": sources,
        "destinations": destinations,
        "silences": [s.as_dict() for s in list_silences(conn, now)],
    }
    if isinstance(conn, PgConnection):
        rows = lease_rows(conn)
        ended = [r for r in rows if r.name.startswith(MEMBER_PREFIX) and r.expires_in_secs <= 0]
        shown = [r for r in rows if r not in ended]
        doc["instances"] = sorted(r.owner for r in shown if r.name.startswith(MEMBER_PREFIX))
        doc["leases"] = [
            {"name": r.name, "owner": r.owner, "token": r.token,
             "expires_in_secs": round(r.expires_in_secs, 3)}
            for r in shown
        ]  # fmt: skip
        doc["expired_members"] = sum(
            1 for r in ended if r.expires_in_secs > -MEMBER_PRUNE_AFTER_SECS
        )
    return doc


def _secrets(value: Any) -> Iterator[str]:
    if isinstance(value, Secret):
        yield value.reveal()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets(item)


def _hide(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "<secret>")
    return text


def entry_doc(
    config: Config,
    entry: OutboxEntry,
    *,
    registry: NotifierRegistry = DEFAULT_REGISTRY,
) -> dict[str, Any]:
    """One row with its alert and the payload its notifier would send now.

    Shape: :meth:`OutboxEntry.summary` plus ``"alert"`` (the stored alert or null when
    unreadable) and ``"payload"`` (the rendered JSON, or null with ``"render_error"``).
    Every configured secret's text is replaced by ``<secret>`` in both.
    """
    doc: dict[str, Any] = entry.summary()
    notifier_config = next((n for n in config.notifiers if n.name == entry.destination), None)
    secrets = [] if notifier_config is None else list(_secrets(dict(notifier_config.options)))
    try:
        record = decode_record(entry.record, (entry.destination,), config.known_packs)
    except RecordError as err:
        doc.update(alert=None, payload=None, render_error=str(err))
        return doc
    doc["alert"] = json.loads(_hide(json.dumps(record.alert.as_dict()), secrets))
    if notifier_config is None:
        doc.update(payload=None, render_error="no notifier of that name is configured")
        return doc
    notifier = registry.create(notifier_config.name, notifier_config.type, notifier_config.options)
    try:
        members = record.members
        payload = (
            notifier.render(members[0]) if len(members) == 1 else notifier.render_digest(members)
        )
        shown = None if payload is None else json.loads(_hide(json.dumps(payload), secrets))
        doc["payload"] = shown
    except Exception as err:  # a renderer's bug must not hide the row
        doc.update(payload=None, render_error=f"{type(err).__name__}: {err}")
    finally:
        notifier.close()
    return doc


def _test_alert(notifier: str, now: float) -> Alert:
    """A synthetic alert that says so in every text field a receiver shows."""
    marker = "TEST ALERT from tracked-connections-alerts test-notifier; not a real connection"
    event = Event(
        name="tracked_connections_test",
        pack=None,
        query="tracked_connections_test",
        host_identifier=TEST_HOST,
        calendar_time="",
        unix_time=int(now),
        epoch=0,
        counter=0,
        action="added",
        columns=MappingProxyType(
            {
                "pid": 0,
                "family": 2,
                "protocol": 6,
                "local_address": "192.0.2.1",
                "local_port": 0,
                "remote_address": "192.0.2.2",
                "remote_port": 0,
                "direction": "outbound",
                "name": "test-notifier",
                "path": "",
                "cmdline": marker,
                "username": "",
            }
        ),
        decorations=MappingProxyType({"hostname": TEST_HOST, "test": "true", "note": marker}),
    )
    return Alert(f"test-{uuid.uuid4().hex}", TEST_RULE, (notifier,), event)


def test_notification(
    config: Config,
    name: str,
    now: float,
    *,
    registry: NotifierRegistry = DEFAULT_REGISTRY,
) -> dict[str, Any]:
    """Send one synthetic alert through notifier ``name`` (rendered, signed, its
    timeouts applied) and report what happened. The outbox is not touched.

    Returns:
        ``{"notifier", "type", "alert_id", "delivered": bool, "http_status": int | null,
        "outcome": str, "retryable": bool | null}``.

    Only message destinations (the HTTP notifiers: webhook, slack, teams, pagerduty)
    are tested: a response action (``command``, ``fleet_script``, ``fleet_live_query``)
    acts on a host, which a test must not do.

    Raises:
        KeyError: no notifier ``name`` in the configuration.
        ValueError: ``name`` is a response action.
    """
    found = next((n for n in config.notifiers if n.name == name), None)
    if found is None:
        raise KeyError(name)
    notifier: Notifier = registry.create(found.name, found.type, found.options)
    if not isinstance(notifier, HttpNotifier):
        notifier.close()
        raise ValueError(
            f"{name} is a response action (type {found.type}), not a message destination:"
            " a test alert would act on a host, so test-notifier does not send it"
        )
    alert = _test_alert(name, now)
    doc: dict[str, Any] = {"notifier": name, "type": found.type, "alert_id": alert.id}
    try:
        notifier.send(notifier.render(alert), idempotency_key=alert.id)
    except NotifyError as err:
        doc.update(delivered=False, outcome=str(err), retryable=err.retryable)
    else:
        doc.update(delivered=True, outcome="accepted", retryable=None)
    finally:
        status = notifier.transport.last_status if isinstance(notifier, HttpNotifier) else None
        notifier.close()
    doc["http_status"] = status
    return doc
