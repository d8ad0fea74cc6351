"""Split the NATS protocol stream in bulk, for the reader process's connection.

Why: nats-py parses each ``MSG`` with regular expressions, builds a ``Msg`` (with
its headers parsed into a dict), puts it on the subscription's queue and wakes the
subscription's task to call back; about 7 µs of CPU per message on the development
machine, most of the reader process's time. The pull consumer's inbox receives a
thousand messages per request, and all it needs of each is its reply subject (the
stream sequence), its raw headers (``Content-Encoding``, or the status that ends a
request) and its payload.

:class:`BulkParser` takes the place of nats-py's parser on one client
(:func:`bulk_client`): it walks each chunk read from the socket with
``bytes.find`` and slices, and hands the messages of *routed* subscriptions (the
pull inboxes, by subscription id: a delivered message keeps the subject it was
published on) to their sink as one list per chunk, without ``Msg`` objects or
queues.
Everything else — messages of other subscriptions (the replies to
acknowledgements), ``PING``, ``PONG``, ``INFO``, ``+OK``, ``-ERR`` — goes to the
client's own handlers, as nats-py's parser would send it (the ``nc._process_*``
methods that ``nats/protocol/parser.py`` calls, nats-py 2.16).

Wire format (NATS client protocol, docs.nats.io "Client Protocol"):
``MSG <subject> <sid> [reply-to] <#bytes>\\r\\n<payload>\\r\\n`` and
``HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>\\r\\n<headers>
<payload>\\r\\n``, the headers starting with ``NATS/1.0`` (followed by a status
code and description on a status message) and ending with an empty line.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Container
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

__all__ = [
    "BulkParser",
    "Delivered",
    "Operation",
    "Sink",
    "bulk_client",
    "header_value",
    "split_messages",
    "status_of",
]

Delivered = tuple[bytes, bytes, "bytes | None", bytes]
"""One message of a routed subscription: ``(subject, reply subject, raw headers or None,
payload)``."""

Sink = Callable[[list[Delivered]], Awaitable[None]]
"""Receives the messages of one routed subscription found in one chunk, in order."""

Operation = tuple[bytes, Any]
"""One operation found by :func:`split_messages`."""

_MAX_CONTROL_LINE = 4096  # nats-server's default max_control_line, bytes
_CRLF = b"\r\n"


def split_messages(data: bytes, routes: Container[bytes]) -> tuple[list[Operation], int]:
    """Split ``data`` (a prefix of the protocol stream) into operations.

    Args:
        data: bytes read from the connection, starting at an operation.
        routes: the subscription ids (ASCII digits) whose messages are gathered.

    Returns:
        ``(operations, used)``: the operations in order, and how many bytes of
        ``data`` they took (the rest is an operation not all here yet). An
        operation is ``(b"RUN", (sid, [Delivered, ...]))`` for consecutive messages
        of a routed subscription, ``(b"MSG", (sid, subject, reply, payload,
        headers))`` for any other message (the arguments of nats-py's
        ``_process_msg``), ``(b"PING", None)``, ``(b"PONG", None)``, ``(b"INFO",
        dict)`` or ``(b"-ERR", text)``; ``+OK`` is dropped.

    Raises:
        ProtocolError: an operation the protocol does not have, or a control line
            longer than 4096 bytes.
    """
    ops: list[Operation] = []
    pos = 0
    size = len(data)
    find = data.find
    startswith = data.startswith
    run: list[Delivered] | None = None
    run_sid = b""
    while pos < size:
        end = find(_CRLF, pos)
        if end < 0:
            if size - pos > _MAX_CONTROL_LINE:
                raise ProtocolError("nats: control line too long")
            break
        if startswith(b"MSG ", pos):  # most of the stream: no headers
            parts = data[pos + 4 : end].split()
            if len(parts) == 4:
                subject, sid, reply, total = parts
            elif len(parts) == 3:
                subject, sid, total = parts
                reply = b""
            else:
                raise ProtocolError(f"nats: malformed {data[pos:end][:80]!r}")
            start = end + 2
            stop = start + int(total)
            if stop + 2 > size:
                break  # the payload is not all here yet
            headers = None
            payload = data[start:stop]
        elif startswith(b"HMSG ", pos):
            parts = data[pos + 5 : end].split()
            if len(parts) == 5:
                subject, sid, reply, head, total = parts
            elif len(parts) == 4:
                subject, sid, head, total = parts
                reply = b""
            else:
                raise ProtocolError(f"nats: malformed {data[pos:end][:80]!r}")
            start = end + 2
            stop = start + int(total)
            if stop + 2 > size:
                break
            middle = start + int(head)
            headers = data[start:middle]
            payload = data[middle:stop]
        else:
            line = data[pos:end]
            pos = end + 2
            run = None
            _control(line, ops)
            continue
        pos = stop + 2
        if sid in routes:
            if sid != run_sid or run is None:
                run = []
                run_sid = sid
                ops.append((b"RUN", (sid, run)))
            run.append((subject, reply, headers, payload))
        else:
            run = None
            ops.append((b"MSG", (int(sid), subject, reply, payload, headers)))
    return ops, pos


def _control(line: bytes, ops: list[Operation]) -> None:
    """Append the operation of a control line other than ``MSG``/``HMSG``.

    Raises:
        ProtocolError: not an operation of the protocol.
    """
    if line.startswith(b"PING"):
        ops.append((b"PING", None))
    elif line.startswith(b"PONG"):
        ops.append((b"PONG", None))
    elif line.startswith(b"+OK"):
        return
    elif line.startswith(b"-ERR"):
        ops.append((b"-ERR", line[4:].strip().decode(errors="replace").lower()))
    elif line.startswith(b"INFO "):
        ops.append((b"INFO", json.loads(line[5:])))
    else:
        raise ProtocolError(f"nats: unknown protocol {line[:80]!r}")


class BulkParser(Parser):
    """nats-py's parser interface (``parse``, ``reset``) with routed subscriptions.

    Attributes:
        routes: subscription id (ASCII digits) → sink of its messages (:meth:`route`,
            :meth:`unroute`).
    """

    def __init__(self, nc: NatsClient) -> None:
        super().__init__(nc)
        self.routes: dict[bytes, Sink] = {}
        self._rest = b""

    def route(self, sid: int, sink: Sink) -> None:
        """Hand the messages of subscription ``sid`` to ``sink`` from now on."""
        self.routes[str(sid).encode()] = sink

    def unroute(self, sid: int) -> None:
        """Stop routing subscription ``sid``."""
        self.routes.pop(str(sid).encode(), None)

    def reset(self) -> None:
        """Forget a partly read operation (the client is reconnecting)."""
        super().reset()
        self._rest = b""

    async def parse(self, data: bytes = b"") -> None:
        """Parse one chunk read from the connection (and what was left of the last).

        Raises:
            ProtocolError: the server sent something that is not the protocol.
        """
        buf = self._rest + data if self._rest else bytes(data)
        ops, used = split_messages(buf, self.routes)
        self._rest = buf[used:]
        nc: Any = self.nc
        for op, arg in ops:
            if op == b"RUN":
                sink = self.routes.get(arg[0])
                if sink is not None:  # unrouted meanwhile: its subscription is gone too
                    await sink(arg[1])
            elif op == b"MSG":
                await nc._process_msg(*arg)
            elif op == b"PING":
                await nc._process_ping()
            elif op == b"PONG":
                await nc._process_pong()
            elif op == b"INFO":
                await nc._process_info(arg)
            else:
                await nc._process_err(arg)


def bulk_client() -> tuple[NatsClient, BulkParser]:
    """A nats-py client (not connected yet) whose parser is a :class:`BulkParser`."""
    client = NatsClient()
    parser = BulkParser(client)
    client._ps = parser
    return client, parser


def header_value(headers: bytes, name: bytes) -> str | None:
    """The value of header ``name`` (lowercase ASCII) in raw NATS headers; None when
    absent. Names compare case-insensitively; the first occurrence counts."""
    for line in headers.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode(errors="replace")
    return None


def status_of(headers: bytes) -> tuple[str, str] | None:
    """``(status code, description)`` of a status message's headers
    (``NATS/1.0 408 Request Timeout``); None for headers without a status."""
    first = headers.split(b"\r\n", 1)[0]
    parts = first.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"NATS/"):
        return None
    description = parts[2].decode(errors="replace").strip() if len(parts) > 2 else ""
    return parts[1].decode(errors="replace"), description
