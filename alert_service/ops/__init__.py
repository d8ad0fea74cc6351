"""Operations: Prometheus metrics and the ``/metrics`` + ``/health`` HTTP endpoint.

Public API:

* :class:`ServiceMetrics` — counters per destination, pipeline counters and outbox
  gauges read at scrape time, in an own registry;
* :class:`OpsServer`, :class:`MetricsConfig` — the HTTP endpoint (off unless the
  ``metrics`` section is configured; default 127.0.0.1:9464).
"""

from __future__ import annotations

from alert_service.ops.metrics import DELIVERY_STATS_FIELDS, PREFIX, ServiceMetrics
from alert_service.ops.server import DEFAULT_METRICS_PORT, MetricsConfig, OpsServer

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DELIVERY_STATS_FIELDS",
    "PREFIX",
    "MetricsConfig",
    "OpsServer",
    "ServiceMetrics",
]
