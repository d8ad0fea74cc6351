"""The accelerated protocol writes and reads osquery's exact TBinaryProtocol bytes."""

from __future__ import annotations

from typing import Any

import pytest
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from extension.serve import fastproto


def _encode(response: ExtensionResponse, protocol_class: Any) -> bytes:
    buffer = TTransport.TMemoryBuffer()
    response.write(protocol_class(buffer))
    return bytes(buffer.getvalue())


@pytest.mark.skipif(fastproto.fastbinary is None, reason="thrift built without its C extension")
def test_same_bytes_both_ways_on_a_large_reply() -> None:
    rows = [
        {"pid": str(i), "cmdline": f"/usr/bin/caf\u00e9 --n={i} \ufffd", "remote_port": "443"}
        for i in range(2000)
    ]
    response = ExtensionResponse(status=ExtensionStatus(code=0, message="OK"), response=rows)
    fast = _encode(response, fastproto.FastBinaryProtocol)
    assert fast == _encode(response, TBinaryProtocol.TBinaryProtocol)
    decoded = ExtensionResponse()
    decoded.read(fastproto.FastBinaryProtocol(TTransport.TMemoryBuffer(fast)))
    assert decoded == response
    assert isinstance(fastproto.protocol_factory().getProtocol(None), fastproto.FastBinaryProtocol)


def test_factory_falls_back_without_the_c_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastproto, "fastbinary", None)
    factory = fastproto.protocol_factory()
    assert isinstance(factory, TBinaryProtocol.TBinaryProtocolFactory)
