"""Prometheus metrics of the alert service (prometheus-client, own registry).

Exported (names per Prometheus practice: ``*_total`` counters, ``*_seconds``; the only
label is ``destination``, the notifier name — never a host, address or user, which
would make cardinality unbounded)::

    alert_service_<counter>_total                  pipeline counters of Stats, e.g.
                                                   lines_read, parse_errors, events,
                                                   matches (every int field but the
                                                   delivery ones below)
    alert_service_<gauge>                          Stats gauges (stats.GAUGES)
    alert_service_source_last_line_time_seconds{source}   per configured source path
    alert_service_notifications_sent_total{destination}
    alert_service_notifications_retried_total{destination}
    alert_service_notifications_dead_lettered_total{destination}
    alert_service_notifications_suppressed_total{destination}
    alert_service_digests_sent_total{destination}
    alert_service_notification_duration_seconds{destination}   histogram, per request
    alert_service_outbox_pending{destination}                  gauge: queue depth
    alert_service_outbox_oldest_pending_age_seconds{destination}  gauge (0 when empty)
    alert_service_destination_stalled_seconds{destination}  gauge: pending alerts and
                                                   no delivery for this long (0 when
                                                   nothing is pending)
    alert_service_destination_stalled{destination}  1 when that exceeds the delivery
                                                   section's stalled_after_secs, else 0

Pipeline counters and queue gauges are read when scraped (a custom collector), so the
pipeline thread keeps incrementing plain ints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import fields

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alert_service.state.outbox import QueueDepth
from alert_service.stats import GAUGES, Stats

__all__ = ["DELIVERY_STATS_FIELDS", "PREFIX", "ServiceMetrics"]

PREFIX = "alert_service"
DELIVERY_STATS_FIELDS = frozenset({"sent", "failed", "retries", "suppressed", "digests"})
"""Stats fields exported with a ``destination`` label instead (the counters below)."""

QueueProbe = Callable[[], Mapping[str, QueueDepth]]
StallProbe = Callable[[], Mapping[str, float]]


class _ScrapeCollector(Collector):
    def __init__(self, owner: ServiceMetrics) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        owner = self._owner
        stats = owner.stats
        if stats is not None:
            with owner.stats_lock:
                values = {f.name: getattr(stats, f.name) for f in fields(stats)}
            for name, value in values.items():
                if name in DELIVERY_STATS_FIELDS:
                    continue
                if isinstance(value, int) and name in GAUGES:
                    yield GaugeMetricFamily(f"{PREFIX}_{name}", f"Stats.{name}", value=value)
                elif isinstance(value, int):
                    yield CounterMetricFamily(
                        f"{PREFIX}_{name}", f"Stats.{name} since the service started", value=value
                    )
                elif isinstance(value, dict) and name.endswith("_time"):
                    gauge = GaugeMetricFamily(
                        f"{PREFIX}_{name}_seconds",
                        f"Stats.{name}: Unix seconds per configured source",
                        labels=["source"],
                    )
                    for source, seconds in sorted(value.items()):
                        gauge.add_metric([str(source)], float(seconds))
                    yield gauge
        probe = owner.queue_probe
        if probe is None:
            return
        depths = probe()
        now = owner.clock()
        pending = GaugeMetricFamily(
            f"{PREFIX}_outbox_pending", "Pending outbox rows", labels=["destination"]
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row, seconds (0 when none)",
            labels=["destination"],
        )
        for dest in sorted(set(owner.destinations) | set(depths)):
            depth = depths.get(dest, QueueDepth(0, None))
            pending.add_metric([dest], depth.pending)
            age = 0.0 if depth.oldest_created_at is None else now - depth.oldest_created_at
            oldest.add_metric([dest], max(0.0, age))
        yield pending
        yield oldest
        if owner.stall_probe is None:
            return
        stalls = owner.stall_probe()
        seconds = GaugeMetricFamily(
            f"{PREFIX}_destination_stalled_seconds",
            "Seconds a destination has had pending alerts and delivered nothing (0 when none)",
            labels=["destination"],
        )
        flag = GaugeMetricFamily(
            f"{PREFIX}_destination_stalled",
            "1 when destination_stalled_seconds exceeds delivery.stalled_after_secs",
            labels=["destination"],
        )
        for dest in sorted(stalls):
            seconds.add_metric([dest], stalls[dest])
            flag.add_metric([dest], 1.0 if stalls[dest] > owner.stalled_after_secs else 0.0)
        yield seconds
        yield flag


class ServiceMetrics:
    """The service's metrics in their own :class:`CollectorRegistry`.

    Args:
        stats: pipeline counters exported at scrape time (None: none).
        stats_lock: lock guarding ``stats`` (delivery workers increment from threads).
        registry: registry to use (a new one when None).

    Attributes:
        sent, retried, dead_lettered, suppressed, digests: counters labelled by
            ``destination``.
        duration: request duration histogram, seconds.
    """

    def __init__(
        self,
        stats: Stats | None = None,
        stats_lock: threading.Lock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.stats = stats
        self.stats_lock = stats_lock if stats_lock is not None else threading.Lock()
        self.queue_probe: QueueProbe | None = None
        self.stall_probe: StallProbe | None = None
        self.stalled_after_secs = 300.0
        self.clock: Callable[[], float] = time.time
        self.destinations: tuple[str, ...] = ()
        label = ["destination"]
        reg = self.registry
        self.sent = Counter(
            f"{PREFIX}_notifications_sent",
            "Alerts delivered with a 2xx (each alert of a digest counts)",
            label,
            registry=reg,
        )
        self.retried = Counter(
            f"{PREFIX}_notifications_retried",
            "Failed attempts that will be retried (per alert)",
            label,
            registry=reg,
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_notifications_dead_lettered",
            "Alerts given up on: non-retryable answer, unreadable row or too old",
            label,
            registry=reg,
        )
        self.suppressed = Counter(
            f"{PREFIX}_notifications_suppressed",
            "Alerts not sent because their dedup key was silenced",
            label,
            registry=reg,
        )
        self.digests = Counter(
            f"{PREFIX}_digests_sent", "Digest messages delivered", label, registry=reg
        )
        self.duration = Histogram(
            f"{PREFIX}_notification_duration_seconds",
            "Duration of one delivery request, seconds",
            label,
            registry=reg,
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        reg.register(_ScrapeCollector(self))

    def watch_stalls(self, probe: StallProbe, stalled_after_secs: float) -> None:
        """Export how long each destination has been stalled (``probe``, called per
        scrape: destination → seconds) and whether that exceeds ``stalled_after_secs``."""
        self.stall_probe = probe
        self.stalled_after_secs = stalled_after_secs

    def watch_queue(
        self, probe: QueueProbe, destinations: Iterable[str], clock: Callable[[], float]
    ) -> None:
        """Export queue depth and oldest age from ``probe`` for ``destinations``.

        Args:
            probe: returns pending rows per destination (called on each scrape).
            destinations: names always exported (0 when nothing is pending).
            clock: current time, Unix seconds (the delivery clock).
        """
        self.queue_probe = probe
        self.clock = clock
        self.destinations = tuple(destinations)
        for dest in self.destinations:
            for counter in (self.sent, self.retried, self.dead_lettered, self.suppressed):
                counter.labels(dest)
            self.digests.labels(dest)
