"""The operations HTTP endpoint: ``GET /metrics`` (Prometheus) and ``GET /health``.

Configured by the optional top-level ``metrics`` section; without it nothing listens::

    metrics:
      listen_address: 127.0.0.1   # default; use 0.0.0.0 / :: only behind a firewall
      port: 9464                  # default (0 = any free port, logged)

A mounted app (the web console, :class:`MountedApp`) answers every path under its
prefix, GET and POST (a body of at most :data:`MAX_MOUNT_BODY_BYTES`, read within the
same deadline as the head).

``/metrics`` is the text exposition of :class:`~alert_service.ops.metrics.ServiceMetrics`'s
registry. ``/health`` answers JSON (:meth:`DeliveryService.health`) with 200 when
healthy and 503 when not. Other paths get 404, other methods 405. The server logs
``ops_listening`` with the bound address.

Anyone who can reach the port may connect, so the server is built not to be
exhausted by idle, slow or oversized requests (a thread per connection, as
``http.server.ThreadingHTTPServer`` has, lets idle connections take every file
descriptor; then webhooks and ``command`` actions fail with ``EMFILE``):

* it runs on an asyncio event loop in one thread (epoll: an idle connection costs a
  descriptor and a few KiB, no thread);
* at most :data:`MAX_CONNECTIONS` connections are open; a new one closes the oldest
  still waiting for its request, so a scraper or health check always gets through
  while someone holds connections open;
* the request line and headers must arrive within :data:`REQUEST_TIMEOUT_SECS` in
  total and fit :data:`MAX_HEAD_BYTES` (else the connection is closed; 431 for a head
  too large), and a request body is read only for the mounted app, bounded;
* one request per connection (``Connection: close``); the answer is built in a small
  thread pool, so a slow database read never stops the loop.

The libraries at hand were considered: ``ThreadingHTTPServer`` and prometheus-client's
own server have no limits; waitress has a connection limit and an idle timeout but no
total deadline for the head and stops accepting when full (a health check then waits
behind the idle connections). The server speaks only what Prometheus and health
checkers send: ``GET`` with a path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from alert_service.logs import log_event
from alert_service.ops.config import DEFAULT_METRICS_PORT, MetricsConfig

__all__ = [
    "DEFAULT_METRICS_PORT",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "MAX_MOUNT_BODY_BYTES",
    "REQUEST_TIMEOUT_SECS",
    "MetricsConfig",
    "MountedApp",
    "OpsServer",
]

_log = logging.getLogger(__name__)

MAX_CONNECTIONS: Final = 64
"""Most connections open at once; a new one closes the oldest waiting for its request."""

REQUEST_TIMEOUT_SECS: Final = 5.0
"""Time for the request line and headers to arrive, in total, seconds."""

MAX_HEAD_BYTES: Final = 8192
"""Largest request line plus headers, bytes."""

MAX_MOUNT_BODY_BYTES: Final = 64 * 1024
"""Largest request body handed to a mounted app; a longer one gets 413."""

_WRITE_TIMEOUT_SECS: Final = 10.0
_ACCEPT_BACKLOG: Final = 16
_ANSWER_THREADS: Final = 2

HealthProbe = Callable[[], tuple[bool, dict[str, Any]]]
_Answer = tuple[int, list[tuple[str, str]], bytes]
_REASONS: Final = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain; charset=utf-8"


class MountedApp(Protocol):
    """An app served under a path prefix (the web console, :mod:`alert_service.console`).

    ``serve(method, path, query, headers, body)`` gets the header names in lower case
    and returns ``(status, [(header, value)], body)``; it runs in the answer thread pool.
    """

    prefix: str

    def serve(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Answer one request under :attr:`prefix`."""
        ...


def _plain(status: int, text: bytes, ctype: str = _TEXT) -> _Answer:
    return status, [("Content-Type", ctype)], text


class OpsServer:
    """Serve ``/metrics`` and ``/health`` until :meth:`stop`.

    Args:
        config: where to listen.
        registry: metrics to expose.
        health: returns ``(healthy, json_document)``.
        max_connections: connections open at once (default :data:`MAX_CONNECTIONS`).
        request_timeout_secs: deadline for a request's head, seconds.
        max_head_bytes: largest request head, bytes.
        mount: an app answering every path under its prefix (the web console).

    Raises:
        OSError: from :meth:`start` when the address cannot be bound.
    """

    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry,
        health: HealthProbe,
        *,
        max_connections: int = MAX_CONNECTIONS,
        request_timeout_secs: float = REQUEST_TIMEOUT_SECS,
        max_head_bytes: int = MAX_HEAD_BYTES,
        mount: MountedApp | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.health = health
        self.max_connections = max(1, max_connections)
        self.request_timeout_secs = request_timeout_secs
        self.max_head_bytes = max_head_bytes
        self.mount = mount
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._port = config.port
        # Open connections, oldest first: True while waiting for the request head.
        self._conns: dict[asyncio.StreamWriter, bool] = {}

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        return self._port

    def start(self) -> int:
        """Bind and serve in a daemon thread; return the bound port."""
        loop = asyncio.new_event_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            _ANSWER_THREADS, thread_name_prefix="ops-answer"
        )
        loop.set_default_executor(self._pool)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve,
                    self.config.listen_address,
                    self.config.port,
                    family=_family(self.config.listen_address),
                    reuse_address=True,
                    limit=self.max_head_bytes,
                    # asyncio accepts up to ``backlog`` connections per wake-up before
                    # any handler runs (and evicts): keep that burst small.
                    backlog=_ACCEPT_BACKLOG,
                )
            )
        except BaseException:
            loop.close()
            self._pool.shutdown(wait=False)
            raise
        self._loop = loop
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._thread = threading.Thread(target=loop.run_forever, name="ops-http", daemon=True)
        self._thread.start()
        log_event(
            _log,
            logging.INFO,
            "ops_listening",
            listen_address=self.config.listen_address,
            port=self.port,
            paths=["/metrics", "/health", *([self.mount.prefix + "/"] if self.mount else [])],
            max_connections=self.max_connections,
        )
        return self.port

    def stop(self) -> None:
        """Stop serving, close every connection and the socket."""
        loop, server = self._loop, self._server
        if loop is not None and server is not None:

            async def shutdown() -> None:
                server.close()
                for writer in list(self._conns):
                    writer.transport.abort()
                await server.wait_closed()

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if loop is not None:
            loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self._loop = self._server = None

    # -- one connection ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns = self._conns
        conns[writer] = True  # waiting for its request head
        if len(conns) > self.max_connections:
            oldest = next((w for w, waiting in conns.items() if waiting and w is not writer), None)
            if oldest is not None:
                del conns[oldest]
                oldest.transport.abort()
        try:
            answer = await self._read_request(reader)
            if writer in conns:
                conns[writer] = False
            if answer is not None:
                await asyncio.wait_for(self._write(writer, *answer), _WRITE_TIMEOUT_SECS)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            writer.transport.abort()
        finally:
            conns.pop(writer, None)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Answer | None:
        """The answer to the request on ``reader``, or None to just close."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_secs
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), self.request_timeout_secs
            )
        except asyncio.LimitOverrunError:
            return _plain(431, b"request head too large\n")
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _plain(400, b"bad request\n")
        method, target = parts[0], parts[1]
        path, _, query = target.partition("?")
        mount = self.mount
        if mount is not None and (path == mount.prefix or path.startswith(mount.prefix + "/")):
            return await self._mounted(reader, mount, method, path, query, lines[1:], deadline)
        if method != "GET":
            return _plain(405, b"method not allowed\n")
        if path == "/metrics":
            body = await loop.run_in_executor(None, generate_latest, self.registry)
            return _plain(200, body, CONTENT_TYPE_LATEST)
        if path == "/health":
            healthy, doc = await loop.run_in_executor(None, self._probe)
            body = json.dumps(doc, separators=(",", ":"), default=str).encode()
            return _plain(200 if healthy else 503, body, "application/json")
        return _plain(404, b"not found\n")

    async def _mounted(  # noqa: PLR0917 - one request's parts
        self,
        reader: asyncio.StreamReader,
        mount: MountedApp,
        method: str,
        path: str,
        query: str,
        header_lines: list[str],
        deadline: float,
    ) -> _Answer | None:
        """Read a bounded body within the request deadline and let the mounted app answer."""
        if method not in ("GET", "POST"):
            return _plain(405, b"method not allowed\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_MOUNT_BODY_BYTES:
            return _plain(413, b"request too large\n")
        loop = asyncio.get_running_loop()
        body = b""
        if length:
            try:
                body = await asyncio.wait_for(
                    reader.readexactly(length), max(0.0, deadline - loop.time())
                )
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                return None
        return await loop.run_in_executor(None, mount.serve, method, path, query, headers, body)

    def _probe(self) -> tuple[bool, dict[str, Any]]:
        try:
            return self.health()
        except Exception as err:  # the probe must not kill the connection
            return False, {"status": "failing", "reason": str(err)}

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        extra = "".join(
            f"{name}: {value}\r\n"
            for name, value in headers
            if name.lower() not in ("content-length", "connection")
        )
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            f"{extra}"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        writer.write(head + body)
        writer.close()  # after the buffered answer is sent
        await writer.wait_closed()


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET
