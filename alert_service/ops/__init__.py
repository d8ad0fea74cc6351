"""Operations: Prometheus metrics and the ``/metrics`` + ``/health`` HTTP endpoint.

Public API:

* :class:`ServiceMetrics` — counters per destination, pipeline counters and outbox
  gauges read at scrape time, in an own registry;
* :class:`OpsServer`, :class:`MetricsConfig` — the HTTP endpoint (off unless the
  ``metrics`` section is configured; default 127.0.0.1:9464).

The metrics and the server (with ``prometheus_client``, ``asyncio`` and
``http.server``) are imported on first use of their names here, so a command that
serves nothing (``replay``, ``check-config``) does not pay for them at start-up: the
configuration only needs :class:`MetricsConfig`
(tests/alert_service/cli/test_cli_startup_imports.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alert_service.lazy import lazy_getattr
from alert_service.ops.config import DEFAULT_METRICS_PORT, MetricsConfig

if TYPE_CHECKING:
    from alert_service.ops.metrics import DELIVERY_STATS_FIELDS, PREFIX, ServiceMetrics
    from alert_service.ops.server import OpsServer

_LAZY = {
    "DELIVERY_STATS_FIELDS": "alert_service.ops.metrics",
    "PREFIX": "alert_service.ops.metrics",
    "ServiceMetrics": "alert_service.ops.metrics",
    "OpsServer": "alert_service.ops.server",
}

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DELIVERY_STATS_FIELDS",
    "PREFIX",
    "MetricsConfig",
    "OpsServer",
    "ServiceMetrics",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
