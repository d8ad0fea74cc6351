"""The source stage's configuration: one item of ``sources``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alert_service.source.follower import (
    DEFAULT_PARTIAL_LINE_FLUSH_SECS,
    DEFAULT_POLL_INTERVAL_SECS,
)
from alert_service.source.lines import DEFAULT_MAX_LINE_BYTES
from alert_service.source.records import StartAt

__all__ = ["DEFAULT_STALE_AFTER_SECS", "NatsSettings", "SourceConfig"]

DEFAULT_STALE_AFTER_SECS = 300.0
"""Default ``sources[].stale_after_secs`` (5 minutes)."""


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
class SourceConfig:
    """One results log to follow (an item of ``sources``).

    Attributes:
        path: the log file, e.g. ``/var/log/osquery/osqueryd.results.log``; with
            ``glob`` true, a pattern naming several live logs (each followed alone).
        glob: True when the entry was given as ``glob:`` instead of ``path:``.
        start_at: ``end`` (default) skips what the file holds when ``run`` starts
            for the first time (no checkpoint); ``beginning`` reads it. Files
            appearing later are always read whole; with a checkpoint, ``run``
            resumes where it stopped.
        max_line_bytes: longest accepted line, bytes (default 1 MiB).
        poll_interval_secs: pause between polls, seconds (default 0.25).
        partial_line_flush_secs: how long the unterminated last line of a finished
            (rotated/deleted) file may stay unchanged before it is taken as a line,
            seconds (default 5).
        stale_after_secs: a source with no new line for this long logs
            ``source_stale`` and counts in the ``stale_sources`` gauge, seconds
            (default 300).
        nats: set for a stream source (``nats:`` instead of ``path``/``glob``);
            ``path`` is then its name, ``nats:<stream>/<durable>``.
    """

    path: str
    start_at: StartAt = "end"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    poll_interval_secs: float = DEFAULT_POLL_INTERVAL_SECS
    glob: bool = False
    partial_line_flush_secs: float = DEFAULT_PARTIAL_LINE_FLUSH_SECS
    stale_after_secs: float = DEFAULT_STALE_AFTER_SECS
    nats: NatsSettings | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any]) -> SourceConfig:
        """Build from one validated item of ``sources`` (``path:``, ``glob:`` or ``nats:``)."""
        pattern = raw.get("glob")
        if "nats" in raw:
            nats = NatsSettings.from_config(raw["nats"])
            return cls(
                path=nats.name,
                poll_interval_secs=float(
                    raw.get("poll_interval_secs", DEFAULT_POLL_INTERVAL_SECS)
                ),
                stale_after_secs=float(raw.get("stale_after_secs", DEFAULT_STALE_AFTER_SECS)),
                nats=nats,
            )
        return cls(
            path=raw["path"] if pattern is None else pattern,
            glob=pattern is not None,
            start_at=raw.get("start_at", "end"),
            max_line_bytes=raw.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES),
            poll_interval_secs=float(raw.get("poll_interval_secs", DEFAULT_POLL_INTERVAL_SECS)),
            partial_line_flush_secs=float(
                raw.get("partial_line_flush_secs", DEFAULT_PARTIAL_LINE_FLUSH_SECS)
            ),
            stale_after_secs=float(raw.get("stale_after_secs", DEFAULT_STALE_AFTER_SECS)),
        )
