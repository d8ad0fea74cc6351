"""TBinaryProtocol through thrift's C extension, for the bindings osquery ships.

The ``osquery`` package's generated code (Thrift 0.10 compiler) declares
``thrift_spec`` tuples in a form that the C extension of current ``thrift``
(``thrift.protocol.fastbinary``) rejects, so ``TBinaryProtocolAccelerated``
raises TypeError on them. :class:`FastBinaryProtocol` hands the C extension
converted specs and produces the same bytes as the pure-Python
``TBinaryProtocol`` (a self-check at start proves it), about 16 times faster.
The server uses it for every message except a ``generate`` reply of the
connection table, whose rows are already encoded (reply.py).

Where the C extension is missing (thrift built without a compiler) or the
self-check fails, :func:`protocol_factory` returns the plain factory.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TType
from thrift.transport import TTransport

try:
    from thrift.protocol import fastbinary
except ImportError:  # thrift installed without its C extension
    fastbinary = None

__all__ = ["FastBinaryProtocol", "protocol_factory"]

log = logging.getLogger(__name__)


def _listed_args(ttype: int, args: Any) -> Any:
    if ttype == TType.STRUCT:
        return [args[0], _listed_spec(args[1])]
    if ttype in (TType.LIST, TType.SET):
        return (args[0], _listed_args(args[0], args[1]), *args[2:])
    if ttype == TType.MAP:
        key, value = _listed_args(args[0], args[1]), _listed_args(args[2], args[3])
        return (args[0], key, args[2], value, *args[4:])
    return args


@functools.cache
def _listed_spec(spec: Any) -> Any:
    """A generated ``thrift_spec`` with nested struct specs as the C extension wants them."""
    return tuple(
        None if f is None else (f[0], f[1], f[2], _listed_args(f[1], f[3]), f[4]) for f in spec
    )


def _fast_encode(obj: Any, spec: Any) -> bytes:
    assert fastbinary is not None
    return bytes(fastbinary.encode_binary(obj, [spec[0], _listed_spec(spec[1])]))


def _fast_decode(obj: Any, protocol: Any, spec: Any) -> None:
    assert fastbinary is not None
    fastbinary.decode_binary(obj, protocol, [spec[0], _listed_spec(spec[1])])


class FastBinaryProtocol(TBinaryProtocol.TBinaryProtocol):  # type: ignore[misc]
    """TBinaryProtocol whose whole structs are encoded and decoded in C.

    The generated code calls ``_fast_encode``/``_fast_decode`` when a protocol
    has them (decoding only on a CReadableTransport such as TBufferedTransport).
    """

    def __init__(self, trans: Any) -> None:
        super().__init__(trans)
        self._fast_encode = _fast_encode
        self._fast_decode = _fast_decode


class _FastFactory:
    def getProtocol(self, trans: Any) -> FastBinaryProtocol:  # noqa: N802 (thrift's name)
        return FastBinaryProtocol(trans)


def _encode(response: ExtensionResponse, protocol_class: Any) -> bytes:
    buffer = TTransport.TMemoryBuffer()
    response.write(protocol_class(buffer))
    return bytes(buffer.getvalue())


def _self_check() -> bool:
    sample = ExtensionResponse(
        status=ExtensionStatus(code=0, message="OK", uuid=7),
        response=[{"pid": "1", "cmdline": "caf\u00e9 \ufffd"}, {}],
    )
    try:
        return _encode(sample, FastBinaryProtocol) == _encode(
            sample, TBinaryProtocol.TBinaryProtocol
        )
    except Exception as err:
        log.warning("thrift's C extension cannot encode osquery's structs (%s): using the "
                    "pure-Python protocol", err)  # fmt: skip
        return False


def protocol_factory() -> Any:
    """The fastest protocol factory that writes osquery's exact TBinaryProtocol bytes."""
    if fastbinary is not None and _self_check():
        return _FastFactory()
    if fastbinary is None:
        log.info("thrift has no C extension here: using the pure-Python protocol")
    return TBinaryProtocol.TBinaryProtocolFactory()
