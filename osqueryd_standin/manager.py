"""The ExtensionManager Thrift service of the osqueryd stand-in.

Part of the osqueryd stand-in (a test double, not osquery). Serves the
``ExtensionManager`` service from the generated bindings in the ``osquery``
package on a UNIX socket, TBinaryProtocol over TBufferedTransport, one thread
per connection like osqueryd's TThreadedServer. Stale ``<socket>.*`` files are
deleted before binding (upstream osquery 5.23 osquery/extensions/impl_thrift.cpp,
osquery/extensions/interface.cpp removeStalePaths).

Answers:

* ``ping`` → code 0 "pong" uuid 0;
* ``registerExtension`` → code 0 "OK" with the new uuid, or code 1 with
  osqueryd's message (see :mod:`osqueryd_standin.registry`);
* ``deregisterExtension`` → code 0 "OK", or code 1 "No extension UUID found";
* ``extensions`` → uuid → InternalExtensionInfo;
* ``options`` → the flags the stand-in emulates, as {value, default_value, type};
* ``query`` / ``getQueryColumns`` → rows of strings, code 0 "OK", or code 1
  with the SQLite or extension error;
* ``call`` → only ``table`` columns/generate for the built-in tables;
* ``shutdown`` → sets :attr:`ManagerHandler.shutdown_requested` (osqueryd
  would request its own shutdown).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from osquery.extensions import ExtensionManager
from osquery.extensions.ttypes import (
    ExtensionResponse,
    ExtensionStatus,
    InternalExtensionInfo,
    InternalOptionInfo,
)
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from osqueryd_standin.errors import StandinQueryError
from osqueryd_standin.registry import RegistrationError, Registry
from osqueryd_standin.sqlengine import BuiltinTable, SqlEngine

__all__ = ["ManagerHandler", "ManagerServer", "OptionValue", "remove_stale_paths", "thrift_safe"]

log = logging.getLogger("osqueryd_standin.manager")

OptionValue = tuple[str, str, str]
"""(value, default_value, type) of one emulated flag."""


def thrift_safe(text: str) -> str:
    """Python thrift encodes strings strictly as UTF-8: replace invalid bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class ManagerHandler:
    """Implements ``osquery.extensions.ExtensionManager.Iface``.

    Args:
        registry: extension registrations.
        engine: SQL engine for query/getQueryColumns.
        options: flag name → (value, default_value, type).
        builtins: the stand-in's own tables, for ``call("table", ...)``.
    """

    def __init__(
        self,
        registry: Registry,
        engine: SqlEngine,
        options: Callable[[], Mapping[str, OptionValue]],
        builtins: Mapping[str, BuiltinTable],
    ) -> None:
        self._registry = registry
        self._engine = engine
        self._options = options
        self._builtins = builtins
        self.shutdown_requested = threading.Event()

    # Extension service -------------------------------------------------
    def ping(self) -> Any:
        return ExtensionStatus(code=0, message="pong", uuid=0)

    def call(self, registry: str, item: str, request: Mapping[str, str]) -> Any:
        if registry == "table" and item in self._builtins:
            table = self._builtins[item]
            action = request.get("action", "")
            if action == "columns":
                routes = [
                    {"id": "column", "name": c.name, "type": c.type, "op": str(c.options)}
                    for c in table.columns
                ]
                return ExtensionResponse(
                    status=ExtensionStatus(code=0, message="OK", uuid=0), response=routes
                )
            if action == "generate":
                return ExtensionResponse(
                    status=ExtensionStatus(code=0, message="OK", uuid=0), response=table.rows()
                )
        message = f"Cannot call registry item: {item}"
        return ExtensionResponse(status=ExtensionStatus(code=1, message=message), response=[])

    def shutdown(self) -> None:
        log.info("Extension manager received a shutdown request")
        self.shutdown_requested.set()

    # ExtensionManager service ------------------------------------------
    def extensions(self) -> Any:
        return {
            uuid: InternalExtensionInfo(
                name=rec.name,
                version=rec.version,
                sdk_version=rec.sdk_version,
                min_sdk_version=rec.min_sdk_version,
            )
            for uuid, rec in self._registry.extensions().items()
        }

    def options(self) -> Any:
        return {
            name: InternalOptionInfo(value=value, default_value=default, type=kind)
            for name, (value, default, kind) in self._options().items()
        }

    def registerExtension(self, info: Any, registry: Any) -> Any:  # noqa: N802 (Thrift name)
        name = str(getattr(info, "name", None) or "")
        try:
            uuid = self._registry.register(
                name,
                str(getattr(info, "version", None) or ""),
                str(getattr(info, "sdk_version", None) or ""),
                str(getattr(info, "min_sdk_version", None) or ""),
                registry or {},
            )
        except RegistrationError as exc:
            log.error("Could not add extension %s: %s", name, exc.message)
            return ExtensionStatus(code=1, message=exc.message)
        log.info("Registering extension (%s, %d)", name, uuid)
        return ExtensionStatus(code=0, message="OK", uuid=uuid)

    def deregisterExtension(self, uuid: int) -> Any:  # noqa: N802 (Thrift name)
        if not self._registry.deregister(int(uuid)):
            return ExtensionStatus(code=1, message="No extension UUID found")
        return ExtensionStatus(code=0, message="OK", uuid=0)

    def query(self, sql: str) -> Any:
        try:
            rows = self._engine.query_strings(sql)
        except StandinQueryError as exc:
            return ExtensionResponse(
                status=ExtensionStatus(code=1, message=thrift_safe(exc.message)), response=[]
            )
        response = [{thrift_safe(k): thrift_safe(v) for k, v in row.items()} for row in rows]
        return ExtensionResponse(
            status=ExtensionStatus(code=0, message="OK", uuid=0), response=response
        )

    def getQueryColumns(self, sql: str) -> Any:  # noqa: N802 (Thrift name)
        try:
            columns = self._engine.query_columns(sql)
        except StandinQueryError as exc:
            return ExtensionResponse(
                status=ExtensionStatus(code=1, message=thrift_safe(exc.message)), response=[]
            )
        return ExtensionResponse(
            status=ExtensionStatus(code=0, message="OK", uuid=0),
            response=[{name: kind} for name, kind in columns],
        )


def remove_stale_paths(socket_path: str) -> None:
    """Delete ``<socket_path>.*`` files, as osqueryd does before binding."""
    for path in glob.glob(glob.escape(socket_path) + ".*"):
        with contextlib.suppress(OSError):
            os.unlink(path)


class ManagerServer:
    """A threaded Thrift server for the ExtensionManager service.

    Args:
        socket_path: UNIX socket path (at most ~107 bytes).
        handler: the service implementation.
    """

    def __init__(self, socket_path: str, handler: ManagerHandler) -> None:
        self.socket_path = socket_path
        self._processor = ExtensionManager.Processor(handler)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._bound: os.stat_result | None = None

    def start(self) -> None:
        """Remove stale sockets, bind, listen and start accepting.

        Raises:
            OSError: the socket cannot be bound.
        """
        remove_stale_paths(self.socket_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        self._bound = os.stat(self.socket_path)
        listener.listen(128)
        self._listener = listener
        self._thread = threading.Thread(
            target=self._accept_loop, name="standin-manager-accept", daemon=True
        )
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            with self._lock:
                if self._stopping.is_set():
                    conn.close()
                    return
                self._clients.add(conn)
            threading.Thread(
                target=self._serve_client, args=(conn,), name="standin-manager-conn", daemon=True
            ).start()

    def _serve_client(self, conn: socket.socket) -> None:
        sock = TSocket.TSocket()
        sock.setHandle(conn)
        transport = TTransport.TBufferedTransport(sock)
        protocol = TBinaryProtocol.TBinaryProtocol(transport)
        try:
            while not self._stopping.is_set():
                self._processor.process(protocol, protocol)
        except TTransport.TTransportException:
            pass
        except OSError:
            pass
        except Exception:
            log.exception("Error serving an extension manager connection")
        finally:
            with self._lock:
                self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        """Stop accepting, close open connections and remove our socket file."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        # Remove our socket file, but not one a newer process bound meanwhile.
        with contextlib.suppress(OSError):
            current = os.stat(self.socket_path)
            if self._bound is not None and (current.st_ino, current.st_dev) == (
                self._bound.st_ino,
                self._bound.st_dev,
            ):
                os.unlink(self.socket_path)
