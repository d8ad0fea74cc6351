"""The ``generate`` reply written from encoded rows, straight to osqueryd's socket.

:class:`EncodedRows` carries a table's rows as the TBinaryProtocol bytes of
their maps (extension/enrich/wire.py). :class:`ReplyProcessor` answers
osquery's ``Extension.call`` like the generated ``Extension.Processor``,
except that a reply whose rows are encoded already is framed around those
bytes and sent as they are, instead of being encoded again value by value.

Framing (Apache Thrift lib/py/src/protocol/TBinaryProtocol.py 0.25, strict
writes; osquery/extensions/extensions.thrift): the message header (i32
``VERSION_1 | REPLY``, the method name ``call`` as a string, i32 sequence
id); the ``call_result`` struct, whose field 0 ``success`` is the
``ExtensionResponse`` struct: field 1 ``status`` (``ExtensionStatus``:
field 1 ``code`` i32, field 2 ``message`` string), field 2 ``response``
(``list<map<string, string>>``: element type byte 13, i32 count, the maps),
a stop byte; then the stop byte of ``call_result``.
tests/extension/test_wire_rows.py checks the bytes against thrift's own.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from osquery.extensions import Extension
from osquery.extensions.Extension import call_args, call_result
from osquery.extensions.ttypes import ExtensionResponse
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TTransport

from extension.enrich.wire import decode_rows

__all__ = ["EncodedRows", "ReplyProcessor", "ReplyTransportFactory", "reply_head"]

log = logging.getLogger(__name__)

_VERSION_1 = -2147418112  # 0x80010000 as a signed i32
_I32 = struct.Struct("!i")
_FIELD = struct.Struct("!bh")
_STOP = b"\x00"


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _I32.pack(len(data)) + data


def reply_head(seqid: int, code: int, message: str, rows: int) -> bytes:
    """The bytes of a ``call`` reply up to its first row.

    Args:
        seqid: the request's sequence id, echoed.
        code: ``ExtensionStatus.code``.
        message: ``ExtensionStatus.message``.
        rows: how many row maps follow.
    """
    return b"".join((
        _I32.pack(_VERSION_1 | TMessageType.REPLY), _string("call"), _I32.pack(seqid),
        _FIELD.pack(TType.STRUCT, 0),                       # call_result.success
        _FIELD.pack(TType.STRUCT, 1),                       # ExtensionResponse.status
        _FIELD.pack(TType.I32, 1), _I32.pack(code),         # ExtensionStatus.code
        _FIELD.pack(TType.STRING, 2), _string(message),     # ExtensionStatus.message
        _STOP,
        _FIELD.pack(TType.LIST, 2),                         # ExtensionResponse.response
        struct.pack("!bi", TType.MAP, rows),
    ))  # fmt: skip


REPLY_TAIL = _STOP + _STOP
"""Ends ``ExtensionResponse`` and ``call_result``."""


class EncodedRows(Sequence[dict[str, str]]):
    """A table's rows as encoded maps; a sequence of ``dict[str, str]`` for other readers.

    Args:
        pieces: the ``count`` encoded ``map<string, string>``, joined into
            pieces (kept as :attr:`pieces`): re-iterable, e.g. a list of bytes or
            extension.enrich.wire.GroupedRows, which makes each piece when reached.
        count: the number of rows.
    """

    __slots__ = ("_decoded", "pieces", "row_count")

    def __init__(self, pieces: Iterable[bytes], count: int) -> None:
        self.pieces = pieces
        self.row_count = count
        self._decoded: list[dict[str, str]] | None = None

    def __len__(self) -> int:
        return self.row_count

    @overload
    def __getitem__(self, index: int) -> dict[str, str]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[dict[str, str]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, str] | Sequence[dict[str, str]]:
        return self.rows()[index]

    def __iter__(self) -> Iterator[dict[str, str]]:
        return iter(self.rows())

    def rows(self) -> list[dict[str, str]]:
        """The rows decoded (once) by thrift."""
        if self._decoded is None:
            self._decoded = decode_rows(list(self.pieces), self.row_count)
        return self._decoded

    def reply(self, seqid: int) -> bytes:
        """The whole ``call`` reply: status 0 ``OK`` and these rows."""
        return b"".join(self.reply_pieces(seqid))

    def reply_pieces(self, seqid: int) -> Iterator[bytes]:
        """:meth:`reply` in pieces, each made when reached, to be sent one after another."""
        yield reply_head(seqid, 0, "OK", self.row_count)
        yield from self.pieces
        yield REPLY_TAIL


class _ReplyTransport(TTransport.TBufferedTransport):  # type: ignore[misc]
    """TBufferedTransport that can also send a reply's pieces without joining them."""

    def __init__(self, trans: Any) -> None:
        super().__init__(trans)
        self._socket = trans

    def send_pieces(self, pieces: Iterable[bytes]) -> None:
        """Send ``pieces`` one after another, after anything buffered.

        Small pieces are joined up to :data:`_SEND_BYTES` and large ones
        sent as they are (:func:`_send_coalesced`); ``pieces`` is read as it
        is sent, so the reply is never held in one buffer whole.
        """
        self.flush()
        handle = getattr(self._socket, "handle", None)
        try:
            if handle is None or not hasattr(handle, "sendall"):
                self._socket.write(b"".join(pieces))
                self._socket.flush()
            else:
                _send_coalesced(handle, pieces)
        except OSError as err:
            raise TTransport.TTransportException(
                TTransport.TTransportException.UNKNOWN, f"cannot send the reply: {err}"
            ) from err


_SEND_BYTES = 64 * 1024
"""Bytes gathered before a send: pieces are joined until they reach this."""


def _send_coalesced(sock: socket.socket, pieces: Iterable[bytes]) -> None:
    """Send every piece, in order, with ``sendall``.

    Consecutive small pieces are joined until they hold :data:`_SEND_BYTES`;
    a piece that holds that much alone is sent as it is, after whatever was
    joined before it. One
    ``sendall`` of a joined buffer costs less CPU than a gathered
    ``sendmsg`` of the same small pieces: the kernel copies one buffer
    instead of hundreds, and a send that stops part way (the reader lags) is
    resumed in C. docs/design/extension-performance.md has the figures.

    Raises:
        OSError: the socket failed.
    """
    send, join = sock.sendall, b"".join
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        if len(piece) >= _SEND_BYTES:
            if batch:
                send(join(batch))
                batch = []
                size = 0
            send(piece)
            continue
        batch.append(piece)
        size += len(piece)
        if size >= _SEND_BYTES:
            send(join(batch))
            batch = []
            size = 0
    if batch:
        send(join(batch))


class ReplyTransportFactory:
    """Transport factory for the server: buffered, able to send a reply whole."""

    def getTransport(self, trans: Any) -> _ReplyTransport:  # noqa: N802 (thrift's name)
        return _ReplyTransport(trans)


class ReplyProcessor(Extension.Processor):  # type: ignore[misc]
    """osquery's ``Extension`` processor; ``call`` replies with encoded rows go out whole."""

    def __init__(self, handler: Any) -> None:
        super().__init__(handler)
        self._processMap["call"] = ReplyProcessor._process_call

    def _process_call(self, seqid: int, iprot: Any, oprot: Any) -> None:
        args = call_args()
        args.read(iprot)
        iprot.readMessageEnd()
        result = call_result()
        try:
            result.success = self._handler.call(args.registry, args.item, args.request)
            msg_type = TMessageType.REPLY
        except (TTransport.TTransportException, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            # As the generated processor does: osqueryd gets an internal error.
            log.exception("call failed")
            msg_type = TMessageType.EXCEPTION
            result = TApplicationException(TApplicationException.INTERNAL_ERROR, "Internal error")
        success = getattr(result, "success", None)
        if isinstance(success, ExtensionResponse) and isinstance(success.response, EncodedRows):
            status = success.status
            if status is not None and (status.code, status.message, status.uuid) == (0, "OK", None):
                pieces = success.response.reply_pieces(seqid)
                if isinstance(oprot.trans, _ReplyTransport):
                    oprot.trans.send_pieces(pieces)
                else:
                    oprot.trans.write(b"".join(pieces))
                    oprot.trans.flush()
                return
            success.response = success.response.rows()
        oprot.writeMessageBegin("call", msg_type, seqid)
        result.write(oprot)
        oprot.writeMessageEnd()
        oprot.trans.flush()
