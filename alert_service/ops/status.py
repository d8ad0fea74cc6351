"""``tracked-connections-alerts status``: partitions, leases and consumer lag of a cluster.

Read from the shared state (the ``leases`` table of a PostgreSQL state,
:mod:`alert_service.state.leases`) and from NATS JetStream (each partition's current
consumer, ``<durable>-<partition>-t<token>``: messages not yet delivered to it, the
lag, and delivered but not yet acknowledged), without a running instance. Printed
as one JSON document::

    {"state": "postgresql schema tracked_connections (Secret(env:TC_STATE_DSN))",
     "members": [{"instance": str, "expires_in_secs": float}],
     "partitions": [{"source": str, "owner": str | null, "token": int | null,
                     "lease": "held" | "expired" | "never",
                     "expires_in_secs": float | null,
                     "pending_messages": int | null, "ack_pending": int | null}],
     "unread_subjects": [{"source": str, "stream": str, "subjects": [str]}],
     "errors": [str]}

``unread_subjects`` lists, per partitioned source whose stream accepts them, the
stream's subjects that no partition's filter covers: a message published there is
stored and never read (:mod:`alert_service.source.nats_coverage`).

A stream source without partitions is one entry with ``lease: "local"``. With an
SQLite state there are no leases (one instance reads everything).
"""

from __future__ import annotations

import asyncio
from typing import Any

from alert_service.config import Config
from alert_service.source.nats_config import NatsSourceConfig
from alert_service.source.nats_coverage import unread_subjects
from alert_service.state.db import open_state_reader
from alert_service.state.leases import MEMBER_PREFIX, lease_rows
from alert_service.state.postgres import PgConnection

__all__ = ["cluster_status"]


def cluster_status(config: Config) -> dict[str, Any]:
    """Return the status document of ``config``'s cluster (see the module docs).

    The state is only read: a missing SQLite file or PostgreSQL schema is an error,
    not created (:func:`~alert_service.state.db.open_state_reader`).

    Raises:
        FileNotFoundError: no SQLite state database.
        sqlite3.Error: the state database cannot be opened or read.
    """
    conn = open_state_reader(config.state.target(config.state_dir))
    try:
        rows = lease_rows(conn) if isinstance(conn, PgConnection) else []
    finally:
        conn.close()
    leases = {r.name: r for r in rows}
    members = [
        {"instance": r.owner, "expires_in_secs": round(r.expires_in_secs, 3)}
        for r in rows
        if r.name.startswith(MEMBER_PREFIX) and r.expires_in_secs > 0
    ]
    partitions: list[dict[str, Any]] = []
    # (entry, servers, stream, consumer name)
    wanted: list[tuple[dict[str, Any], list[str], str, str]] = []
    # (source name, servers, stream, partition filters)
    covering: list[tuple[str, list[str], str, list[str]]] = []
    for source in config.sources:
        if not isinstance(source, NatsSourceConfig):
            continue
        settings = source.nats
        if settings.partitions:
            filters = [settings.subject.replace("{partition}", t) for t in settings.partitions]
            covering.append((settings.name, list(settings.servers), settings.stream, filters))
        for token in settings.partitions or ("",):
            name = f"{settings.name}-{token}" if token else settings.name
            durable = f"{settings.durable}-{token}" if token else settings.durable
            row = leases.get(name)
            entry: dict[str, Any] = {
                "source": name,
                "owner": None,
                "token": None,
                "lease": "local" if not token else "never",
                "expires_in_secs": None,
                "pending_messages": None,
                "ack_pending": None,
            }
            consumer = durable
            if row is not None:
                entry.update(
                    owner=row.owner,
                    token=row.token,
                    lease="held" if row.expires_in_secs > 0 else "expired",
                    expires_in_secs=round(row.expires_in_secs, 3),
                )
                consumer = f"{durable}-t{row.token}"
            partitions.append(entry)
            wanted.append((entry, list(settings.servers), settings.stream, consumer))
    unread: list[dict[str, Any]] = []
    errors = asyncio.run(_consumer_lag(wanted, covering, unread)) if wanted else []
    return {
        "state": config.state.describe(config.state_dir),
        "members": members,
        "partitions": partitions,
        "unread_subjects": unread,
        "errors": errors,
    }


async def _consumer_lag(
    wanted: list[tuple[dict[str, Any], list[str], str, str]],
    covering: list[tuple[str, list[str], str, list[str]]],
    unread: list[dict[str, Any]],
) -> list[str]:
    """Fill in each entry's lag; append to ``unread`` each partitioned source's stream
    subjects no partition reads; return the errors."""
    import nats  # noqa: PLC0415
    import nats.js.errors  # noqa: PLC0415

    errors: list[str] = []
    clients: dict[tuple[str, ...], Any] = {}

    async def connection(servers: list[str]) -> Any:
        """One connection per server list, made on first use."""
        key = tuple(servers)
        if key not in clients:
            clients[key] = await nats.connect(
                servers=servers, connect_timeout=5, max_reconnect_attempts=0
            )
        return clients[key]

    try:
        for name, servers, stream, filters in covering:
            try:
                info = await (await connection(servers)).jetstream().stream_info(stream)
            except Exception as err:
                errors.append(f"{name}: {type(err).__name__}: {err}")
                continue
            subjects = unread_subjects(list(info.config.subjects or []) or [stream], filters)
            if subjects:
                unread.append({"source": name, "stream": stream, "subjects": subjects})
        for entry, servers, stream, consumer in wanted:
            try:
                info = await (await connection(servers)).jetstream().consumer_info(stream, consumer)
            except nats.js.errors.NotFoundError:
                continue  # not created yet: no instance has read the partition
            except Exception as err:
                errors.append(f"{entry['source']}: {type(err).__name__}: {err}")
                continue
            entry["pending_messages"] = int(info.num_pending or 0)
            entry["ack_pending"] = int(info.num_ack_pending or 0)
    finally:
        for client in clients.values():
            await client.close()
    return errors
