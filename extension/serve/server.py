"""Registration with osqueryd and the Thrift server the extension runs.

Lifecycle, following osquery 5.23 osquery/extensions/extensions.cpp and
osquery-python 3.1 osquery/management.py:

1. Connect to the manager socket given by ``--socket``, retrying every 0.2 s
   for ``--timeout`` seconds.
2. ``registerExtension`` with the registry ``{"table": {"tracked_connections":
   <routes>, "tracked_connections_stats": <routes>}}``; osqueryd answers with a
   uuid.
3. Serve the ``Extension`` service on ``<socket>.<uuid>`` (TBinaryProtocol over
   TBufferedTransport), one thread per connection, so a long ``generate`` does
   not hold up osqueryd's pings.
4. Every ``--interval`` seconds, ping the manager on a fresh connection and
   check that our uuid is still registered. osqueryd is *gone* when its socket
   file is missing, nothing listens on it (connection refused), or it no
   longer knows our uuid (it restarted): the extension exits with status 1 at
   once, and the restarted osqueryd launches it again. osqueryd is *stalled*
   when it accepts the connection but does not answer within the interval
   (a busy or paused manager): that is tolerated, checking again with a
   growing pause, for up to ``stall_grace_secs``; only a stall longer than
   that ends the extension. ``shutdown()`` from osqueryd, SIGTERM or SIGINT
   exit with status 0.

Unlike osquery-python's ``start_extension``, a manager that never appears or a
refused registration is an error with a message and exit status 1, never a
silent exit 0; and a failed ``generate`` reaches osqueryd as a status with a
message instead of an "Internal error" exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from osquery.extensions import ExtensionManager
from osquery.extensions.ttypes import (
    ExtensionResponse,
    ExtensionStatus,
    InternalExtensionInfo,
)
from thrift.protocol import TBinaryProtocol
from thrift.server import TServer
from thrift.transport import TSocket, TTransport

from extension import __version__
from extension.enrich.connections import Row
from extension.serve.fastproto import protocol_factory
from extension.serve.reply import ReplyProcessor, ReplyTransportFactory
from extension.serve.table import Table

__all__ = ["DEFAULT_STALL_GRACE_SECS", "EXTENSION_NAME", "ExtensionServer", "ServeError"]

log = logging.getLogger(__name__)

EXTENSION_NAME = "tracked_connections"
"""The name osqueryd sees; ``--extensions_require=tracked_connections`` matches it."""
SDK_VERSION = "3.0.7"
MIN_SDK_VERSION = "1.8.0"
_CONNECT_RETRY_SECS = 0.2
DEFAULT_STALL_GRACE_SECS = 60.0
"""How long an osqueryd that accepts connections but does not answer is waited for."""


class ServeError(Exception):
    """The extension could not connect to, or register with, osqueryd."""


def _client(path: str, timeout_secs: float) -> tuple[Any, TTransport.TBufferedTransport]:
    sock = TSocket.TSocket(unix_socket=path)
    sock.setTimeout(int(timeout_secs * 1000))
    transport = TTransport.TBufferedTransport(sock)
    protocol = TBinaryProtocol.TBinaryProtocol(transport)
    return ExtensionManager.Client(protocol), transport


# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH_BYTES = 107


def _socket_problem(path: str, err: Exception) -> str:
    """Say why ``path`` could not be connected to, in a user's terms."""
    if len(os.fsencode(path)) > _MAX_SOCKET_PATH_BYTES:
        return f"the path is longer than the {_MAX_SOCKET_PATH_BYTES} bytes a UNIX socket may have"
    if not os.path.exists(path):
        return "no such file (is osqueryd running, with --extensions_socket set to this path?)"
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        return "the file is not a socket"
    return f"{err} (osqueryd may be starting or stopping)"


def _status(code: int, message: str) -> ExtensionStatus:
    return ExtensionStatus(code=code, message=message)


class _Handler:
    """Implements osquery's ``Extension`` service (ping, call, shutdown)."""

    def __init__(self, tables: list[Table], on_shutdown: Callable[[], None]) -> None:
        self._tables = {t.name: t for t in tables}
        self._on_shutdown = on_shutdown

    def ping(self) -> ExtensionStatus:
        return _status(0, "OK")

    def shutdown(self) -> None:
        log.info("osqueryd requested shutdown")
        self._on_shutdown()

    def call(self, registry: str, item: str, request: dict[str, str]) -> ExtensionResponse:
        table = self._tables.get(item) if registry == "table" else None
        if table is None:
            return ExtensionResponse(
                status=_status(1, "Extension registry does not contain requested plugin"),
                response=[],
            )
        action = request.get("action")
        if action == "columns":
            return ExtensionResponse(status=_status(0, "OK"), response=table.routes())
        if action == "generate":
            try:
                context = json.loads(request.get("context") or "{}")
                rows: Sequence[Row] = table.generate(context if isinstance(context, dict) else {})
            except Exception as err:
                # The one boundary where errors become osquery statuses: osqueryd
                # fails the query with this message instead of logging an empty table.
                log.exception("generate of %s failed", item)
                return ExtensionResponse(
                    status=_status(1, f"{item}: cannot produce the table: {err}"),
                    response=[],
                )
            return ExtensionResponse(status=_status(0, "OK"), response=rows)
        return ExtensionResponse(
            status=_status(1, f"{item}: unsupported action {action!r}"), response=[]
        )


class ExtensionServer:
    """Registers the table with osqueryd and serves it until told to stop.

    Args:
        socket_path: osqueryd's extension manager socket (``--socket``).
        timeout_secs: how long to wait for the manager socket (``--timeout``).
        interval_secs: seconds between health checks of osqueryd (``--interval``).
        tables: the table plugins to register.
        stall_grace_secs: how long osqueryd may accept connections without
            answering before the extension gives up on it.
    """

    def __init__(
        self,
        socket_path: str,
        timeout_secs: float,
        interval_secs: float,
        tables: list[Table],
        stall_grace_secs: float = DEFAULT_STALL_GRACE_SECS,
    ) -> None:
        self.socket_path = socket_path
        self.timeout_secs = max(timeout_secs, 0.0)
        self.interval_secs = max(interval_secs, 0.2)
        self.stall_grace_secs = max(stall_grace_secs, 0.0)
        self._tables = tables
        self._done = threading.Event()
        self._exit_code = 0
        self.uuid: int | None = None

    def run(self) -> int:
        """Connect, register, serve; block until the extension should exit.

        Returns:
            process exit status: 0 after ``shutdown()``/SIGTERM/SIGINT, 1 when
            osqueryd went away.

        Raises:
            ServeError: the manager socket did not answer within the timeout,
                or osqueryd refused the registration (its message is kept).
        """
        self.uuid = self._register()
        listen_path = f"{self.socket_path}.{self.uuid}"
        self._serve_in_background(listen_path)
        self._install_signal_handlers()
        watcher = threading.Thread(target=self._watch, name="osqueryd-watcher", daemon=True)
        watcher.start()
        names = ", ".join(t.name for t in self._tables)
        log.info("registered as uuid %d, serving %s on %s", self.uuid, names, listen_path)
        self._done.wait()
        with contextlib.suppress(OSError):
            os.unlink(listen_path)
        return self._exit_code

    def stop(self, exit_code: int) -> None:
        """Make :meth:`run` return ``exit_code`` (the first caller wins)."""
        if not self._done.is_set():
            self._exit_code = exit_code
            self._done.set()

    def _register(self) -> int:
        deadline = time.monotonic() + self.timeout_secs
        while True:
            client, transport = _client(self.socket_path, max(self.timeout_secs, 1.0))
            try:
                transport.open()
                break
            except TTransport.TTransportException as err:
                if time.monotonic() >= deadline:
                    raise ServeError(
                        f"cannot connect to osqueryd's extension socket {self.socket_path} "
                        f"within {self.timeout_secs:g} s: {_socket_problem(self.socket_path, err)}"
                    ) from err
                time.sleep(_CONNECT_RETRY_SECS)
        try:
            info = InternalExtensionInfo(
                name=EXTENSION_NAME,
                version=__version__,
                sdk_version=SDK_VERSION,
                min_sdk_version=MIN_SDK_VERSION,
            )
            registry = {"table": {t.name: t.routes() for t in self._tables}}
            status = client.registerExtension(info, registry)
        except (TTransport.TTransportException, OSError) as err:
            raise ServeError(f"registration with osqueryd failed: {err}") from err
        finally:
            transport.close()
        if status.code != 0:
            raise ServeError(f"osqueryd refused the registration: {status.message}")
        return int(status.uuid)

    def _serve_in_background(self, listen_path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(listen_path)
        handler = _Handler(self._tables, self._shutdown_requested)
        server = TServer.TThreadedServer(
            ReplyProcessor(handler),
            TSocket.TServerSocket(unix_socket=listen_path),
            ReplyTransportFactory(),
            protocol_factory(),
            daemon=True,
        )
        # Bind before returning, so osqueryd's first ping finds the socket; then
        # accept with a thread per connection (TThreadedServer.serve would bind again).
        server.serverTransport.listen()

        def accept_forever() -> None:
            while not self._done.is_set():
                try:
                    client = server.serverTransport.accept()
                except (TTransport.TTransportException, OSError) as err:
                    log.error("accept on %s failed: %s", listen_path, err)
                    self.stop(1)
                    return
                if client is not None:
                    threading.Thread(target=server.handle, args=(client,), daemon=True).start()

        threading.Thread(target=accept_forever, name="thrift-server", daemon=True).start()

    def _shutdown_requested(self) -> None:
        # Let the reply reach osqueryd before the process goes.
        threading.Timer(0.1, self.stop, args=(0,)).start()

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received signal %d, exiting", signum)
            self.stop(0)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _watch(self) -> None:
        stalled_since: float | None = None
        next_ping = 0.0
        backoff = self.interval_secs
        while not self._done.wait(self.interval_secs):
            # Whether osqueryd is gone is checked every interval, cheaply; a
            # stalled one is pinged less and less often.
            gone = self._socket_gone()
            if gone is not None:
                log.error("osqueryd has gone away (%s); exiting", gone)
                self.stop(1)
                return
            now = time.monotonic()
            if now < next_ping:
                continue
            unregistered, problem = self._check_manager()
            now = time.monotonic()
            if unregistered:
                log.error("osqueryd has gone away (%s); exiting", problem)
                self.stop(1)
                return
            if problem is None:
                if stalled_since is not None:
                    log.warning("osqueryd answers again after %.1f s", now - stalled_since)
                stalled_since, next_ping, backoff = None, 0.0, self.interval_secs
                continue
            if stalled_since is None:
                stalled_since = now
                log.warning(
                    "osqueryd does not answer (%s); waiting up to %g s before giving up",
                    problem,
                    self.stall_grace_secs,
                )
            waited = now - stalled_since
            if waited >= self.stall_grace_secs:
                log.error("osqueryd has not answered for %.0f s (%s); exiting", waited, problem)
                self.stop(1)
                return
            backoff = min(backoff * 2, self.interval_secs * 8)
            next_ping = min(now + backoff, stalled_since + self.stall_grace_secs)

    def _check_manager(self) -> tuple[bool, str | None]:
        """Ask osqueryd for a ping and our registration.

        Returns:
            (unregistered, problem): problem None when all is well;
            unregistered True when osqueryd answers but no longer knows our
            uuid (it restarted), False when it did not answer in time.
        """
        client, transport = _client(self.socket_path, self.interval_secs)
        try:
            transport.open()
            status = client.ping()
            if status.code != 0:
                return False, f"ping answered code {status.code}: {status.message}"
            if self.uuid not in client.extensions():
                return True, f"uuid {self.uuid} is no longer registered"
        except (TTransport.TTransportException, OSError) as err:
            return False, f"{type(err).__name__}: {err}"
        finally:
            transport.close()
        return False, None

    def _socket_gone(self) -> str | None:
        """Why osqueryd's socket cannot be there any more, or None when it may be."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(self.interval_secs)
        try:
            probe.connect(self.socket_path)
        except FileNotFoundError:
            return f"{self.socket_path} no longer exists"
        except ConnectionRefusedError:
            return f"nothing listens on {self.socket_path} any more"
        except OSError:
            return None  # a full backlog or a timeout: a stall, judged by the ping
        finally:
            probe.close()
        return None
