"""The ``metrics`` section: where the operations HTTP endpoint listens.

::

    metrics:
      listen_address: 127.0.0.1   # default; use 0.0.0.0 / :: only behind a firewall
      port: 9464                  # default (0 = any free port, logged)

Without the section nothing listens (unless the web console is on, which then listens
on the defaults). The server itself is :class:`~alert_service.ops.server.OpsServer`;
this module imports nothing of it, so reading a configuration (``replay``,
``check-config``) does not load ``prometheus_client``, ``asyncio`` or ``http.server``
(about 0.04 s of CPU time at start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DEFAULT_METRICS_PORT", "MetricsConfig"]

DEFAULT_METRICS_PORT: Final = 9464
"""Default port (the port Prometheus exporters of OpenTelemetry use)."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """The ``metrics`` section.

    Attributes:
        listen_address: address to bind (IPv4 or IPv6 literal, or a host name).
        port: TCP port; 0 picks a free one.
    """

    listen_address: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> MetricsConfig | None:
        """Build from the validated section; None when the section is absent."""
        if raw is None:
            return None
        return cls(
            listen_address=str(raw.get("listen_address", "127.0.0.1")),
            port=int(raw.get("port", DEFAULT_METRICS_PORT)),
        )
