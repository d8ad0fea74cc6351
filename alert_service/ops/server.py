"""The operations HTTP endpoint: ``GET /metrics`` (Prometheus) and ``GET /health``.

Configured by the optional top-level ``metrics`` section; without it nothing listens::

    metrics:
      listen_address: 127.0.0.1   # default; use 0.0.0.0 / :: only behind a firewall
      port: 9464                  # default (0 = any free port, logged)

A mounted app (the web console, :class:`MountedApp`) answers every path under its
prefix, GET and POST.

``/metrics`` is the text exposition of :class:`~alert_service.ops.metrics.ServiceMetrics`'s
registry. ``/health`` answers JSON (:meth:`DeliveryService.health`) with 200 when
healthy and 503 when not. Other paths get 404, other methods 405. The server runs in a
daemon thread and logs ``ops_listening`` with the bound address.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alert_service.logs import log_event

__all__ = ["DEFAULT_METRICS_PORT", "MetricsConfig", "OpsServer"]

_log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT: Final = 9464
"""Default port (the port Prometheus exporters of OpenTelemetry use)."""

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]

MAX_MOUNT_BODY_BYTES: Final = 64 * 1024
"""Largest request body handed to a mounted app; a longer one gets 413."""


class MountedApp(Protocol):
    """An app served under a path prefix (the web console, :mod:`alert_service.console`).

    ``handle(method, path, query, headers, body)`` gets the header names in lower
    case and returns ``(status, [(header, value)], body)``.
    """

    prefix: str

    def serve(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request under :attr:`prefix`."""
        ...


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class OpsServer:
    """Serve ``/metrics`` and ``/health`` until :meth:`stop`.

    Args:
        config: where to listen.
        registry: metrics to expose.
        health: returns ``(healthy, json_document)``.

    Raises:
        OSError: from :meth:`start` when the address cannot be bound.
    """

    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry,
        health: HealthProbe,
        mount: MountedApp | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.health = health
        self.mount = mount
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve in a daemon thread; return the bound port."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if self._mounted("GET"):
                    return
                if path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(owner.registry))
                elif path == "/health":
                    try:
                        healthy, doc = owner.health()
                    except Exception as err:  # the probe must not kill the handler
                        healthy, doc = False, {"status": "failing", "reason": str(err)}
                    body = json.dumps(doc, separators=(",", ":"), default=str).encode()
                    self._reply(200 if healthy else 503, "application/json", body)
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"not found\n")

            def do_POST(self) -> None:
                if self._mounted("POST"):
                    return
                self._reply(405, "text/plain; charset=utf-8", b"method not allowed\n")

            def _mounted(self, method: str) -> bool:
                """Hand a request under the mounted app's prefix to it; True when done."""
                mount = owner.mount
                path, _, query = self.path.partition("?")
                if mount is None or not (
                    path == mount.prefix or path.startswith(mount.prefix + "/")
                ):
                    return False
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_MOUNT_BODY_BYTES:
                    self.close_connection = True
                    self._reply(413, "text/plain; charset=utf-8", b"request too large\n")
                    return True
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra, reply = mount.serve(method, path, query, headers, body)
                self.send_response(status)
                for name, value in extra:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
                return True

            def _reply(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                del format, args  # access logs stay off the JSON log stream

        family = _family(self.config.listen_address)
        server_cls = type("_BoundServer", (_Server,), {"address_family": family})
        self._server = server_cls((self.config.listen_address, self.config.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="ops-http", daemon=True
        )
        self._thread.start()
        log_event(
            _log,
            logging.INFO,
            "ops_listening",
            listen_address=self.config.listen_address,
            port=self.port,
            paths=["/metrics", "/health", *([self.mount.prefix + "/"] if self.mount else [])],
        )
        return self.port

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
