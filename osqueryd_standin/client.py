"""Outgoing Thrift calls from the osqueryd stand-in to an extension.

Part of the osqueryd stand-in (a test double, not osquery). Like osqueryd it
opens a fresh client connection for every outgoing call: TBinaryProtocol over
TBufferedTransport on the extension's UNIX socket ``<extensions_socket>.<uuid>``
(upstream osquery 5.23
osquery/extensions/impl_thrift.cpp, osquery/extensions/extensions.h getExtensionSocket).
The bindings are the generated ones shipped in the ``osquery`` package.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from osquery.extensions import Extension
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from osqueryd_standin.errors import StandinError

__all__ = [
    "CallResult",
    "ExtensionCallError",
    "call_extension",
    "extension_socket_path",
    "ping_extension",
    "shutdown_extension",
]

# thrift logs every refused connect at ERROR; the stand-in reports failures itself
# (the first health check polls for the socket file, which is expected to fail).
logging.getLogger("thrift.transport.TSocket").setLevel(logging.CRITICAL)

DEFAULT_THRIFT_TIMEOUT_SECS = 300.0
"""osqueryd's ``--thrift_timeout`` default, in seconds."""


class ExtensionCallError(StandinError):
    """The call could not be made or the reply could not be read."""


@dataclass(frozen=True)
class CallResult:
    """The reply to ``call()``.

    Attributes:
        code: ExtensionStatus.code (0 success, 1 failed, 2 fatal).
        message: ExtensionStatus.message ("" when unset).
        response: the ExtensionPluginResponse, a list of string maps.
    """

    code: int
    message: str
    response: list[dict[str, str]]


def extension_socket_path(manager_socket: str, uuid: int) -> str:
    """The socket an extension serves on: ``<manager_socket>.<uuid>`` (decimal)."""
    return f"{manager_socket}.{uuid}"


@contextmanager
def _connect(path: str, timeout_secs: float) -> Iterator[Any]:
    sock = TSocket.TSocket(unix_socket=path)
    sock.setTimeout(int(timeout_secs * 1000))
    transport = TTransport.TBufferedTransport(sock)
    protocol = TBinaryProtocol.TBinaryProtocol(transport)
    try:
        transport.open()
    except Exception as exc:
        raise ExtensionCallError(f"cannot connect to {path}: {exc}") from exc
    try:
        yield Extension.Client(protocol)
    except ExtensionCallError:
        raise
    except Exception as exc:
        raise ExtensionCallError(str(exc) or type(exc).__name__) from exc
    finally:
        transport.close()


def ping_extension(path: str, timeout_secs: float = DEFAULT_THRIFT_TIMEOUT_SECS) -> int:
    """Ping an extension on a new connection.

    Args:
        path: the extension socket path.
        timeout_secs: send/receive timeout, seconds.

    Returns:
        The status code of the reply.

    Raises:
        ExtensionCallError: connection or protocol failure.
    """
    with _connect(path, timeout_secs) as client:
        status = client.ping()
        code = getattr(status, "code", None)
        return int(code) if code is not None else 0


def call_extension(
    path: str,
    registry: str,
    item: str,
    request: Mapping[str, str],
    timeout_secs: float = DEFAULT_THRIFT_TIMEOUT_SECS,
) -> CallResult:
    """Call ``call(registry, item, request)`` on a new connection.

    Args:
        path: the extension socket path.
        registry: registry name, e.g. "table".
        item: plugin name, e.g. the table name.
        request: the ExtensionPluginRequest (string map).
        timeout_secs: send/receive timeout, seconds.

    Returns:
        The status and response.

    Raises:
        ExtensionCallError: connection failure, transport error or a
            TApplicationException (e.g. "Internal error" when the Python SDK's
            plugin raised).
    """
    with _connect(path, timeout_secs) as client:
        reply = client.call(registry, item, dict(request))
    status = getattr(reply, "status", None)
    code = getattr(status, "code", None)
    message = getattr(status, "message", None)
    rows: list[dict[str, str]] = []
    for row in getattr(reply, "response", None) or []:
        rows.append({str(k): str(v) for k, v in dict(row).items()})
    return CallResult(int(code) if code is not None else 0, str(message or ""), rows)


def shutdown_extension(path: str, timeout_secs: float = 5.0) -> None:
    """Ask an extension to shut down (``shutdown()``, a two-way call).

    Raises:
        ExtensionCallError: connection or protocol failure.
    """
    with _connect(path, timeout_secs) as client:
        client.shutdown()
