"""The ``nats`` source kind's configuration: one ``sources`` item with ``nats:``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alert_service.source.config import DEFAULT_STALE_AFTER_SECS
from alert_service.source.follower import DEFAULT_POLL_INTERVAL_SECS

__all__ = ["NatsSettings", "NatsSourceConfig", "nats_problems"]


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """One ``nats`` source (the ``nats:`` mapping of an item of ``sources``).

    Attributes:
        servers: NATS server URLs, e.g. ``nats://127.0.0.1:4222``.
        stream: the JetStream stream Fleet publishes into (created by the operator).
        subject: the consumer's filter subject, e.g. ``osquery.results.>``; empty =
            every subject of the stream.
        durable: the durable consumer's name (a partition's consumer is
            ``<durable>-<partition>-t<lease token>``). The service creates it again,
            from the stored checkpoint, each time it starts reading: it is the
            service's own, not to be shared with other readers.
        batch_size: messages fetched, processed and committed together (and the
            consumer's ``max_ack_pending`` is twice this: one batch is fetched ahead).
        ack_wait_secs: a fetched message not acknowledged within this is delivered
            again, seconds.
        deliver_all: a consumer created by this source starts at the stream's first
            message (True) or at new messages only (False, like ``start_at: end``).
        partitions: the partition tokens (``"0"`` … ``"P-1"`` for ``partitions: P``, or
            the tokens listed); empty = not partitioned. Each partition has its own
            durable consumer ``<durable>-<token>`` reading ``subject`` with
            ``{partition}`` replaced by the token, and is read by one instance at a
            time (the holder of its lease).
        lease_ttl_secs: how long a partition's lease lasts unrenewed, seconds; a dead
            instance's partitions move within about 4/3 of it.
    """

    servers: tuple[str, ...]
    stream: str
    subject: str = ""
    durable: str = "tracked-connections-alerts"
    batch_size: int = 1000
    ack_wait_secs: float = 60.0
    deliver_all: bool = True
    partitions: tuple[str, ...] = ()
    lease_ttl_secs: float = 15.0

    @property
    def name(self) -> str:
        """``nats:<stream>/<durable>``: the source's name in logs, metrics and checkpoints."""
        return f"nats:{self.stream}/{self.durable}"

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> NatsSettings:
        """Build from a validated ``nats:`` mapping."""
        servers = raw.get("servers", ["nats://127.0.0.1:4222"])
        parts = raw.get("partitions", ())
        tokens = tuple(str(n) for n in range(parts)) if isinstance(parts, int) else tuple(parts)
        return cls(
            servers=tuple(servers),
            stream=raw["stream"],
            subject=raw.get("subject", ""),
            durable=raw.get("durable", "tracked-connections-alerts"),
            batch_size=int(raw.get("batch_size", 1000)),
            ack_wait_secs=float(raw.get("ack_wait_secs", 60.0)),
            deliver_all=raw.get("start_at", "beginning") == "beginning",
            partitions=tokens,
            lease_ttl_secs=float(raw.get("lease_ttl_secs", 15.0)),
        )


@dataclass(frozen=True, slots=True)
class NatsSourceConfig:
    """One ``sources`` item with ``nats:``.

    Attributes:
        nats: the stream, subject, consumer and partitions.
        poll_interval_secs: longest wait for a message when the stream is idle
            (shared by the partitions this instance reads), seconds.
        stale_after_secs: no new line for this long logs ``source_stale``, seconds.
    """

    nats: NatsSettings
    poll_interval_secs: float = DEFAULT_POLL_INTERVAL_SECS
    stale_after_secs: float = DEFAULT_STALE_AFTER_SECS

    @property
    def path(self) -> str:
        """The source's name in logs and ``/health``: ``nats:<stream>/<durable>``."""
        return self.nats.name

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> NatsSourceConfig:
        """Build from one validated ``sources`` item with ``nats:``."""
        return cls(
            nats=NatsSettings.from_config(raw["nats"]),
            poll_interval_secs=float(raw.get("poll_interval_secs", DEFAULT_POLL_INTERVAL_SECS)),
            stale_after_secs=float(raw.get("stale_after_secs", DEFAULT_STALE_AFTER_SECS)),
        )


def nats_problems(raw: Mapping[str, Any]) -> list[str]:
    """What the schema cannot say about a ``sources`` item with ``nats:``."""
    problems: list[str] = []
    if "path" in raw or "glob" in raw:
        problems.append("give exactly one of path, glob or nats")
    nats = raw.get("nats")
    nats = nats if isinstance(nats, Mapping) else {}
    subject = nats.get("subject", "")
    marked = isinstance(subject, str) and "{partition}" in subject
    if "partitions" in nats and not marked:
        problems.append("nats.subject: a partitioned source's subject must hold {partition}")
    elif marked and "partitions" not in nats:
        problems.append("nats.partitions: a subject with {partition} needs partitions")
    return problems
