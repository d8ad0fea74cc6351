"""Flow attributes derived from the socket list: direction and Community ID."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from collections.abc import Callable, Iterable, Sequence

from extension.model import AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = ["community_id", "direction_of", "listening_endpoints"]

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_SEED = struct.pack("!H", 0)
_PORTS = struct.Struct("!HH")
_PROTO_PAD = {IPPROTO_TCP: bytes((IPPROTO_TCP, 0)), IPPROTO_UDP: bytes((IPPROTO_UDP, 0))}

# (protocol, local_port, local_address); local_address is '' for a wildcard bind.
Endpoint = tuple[int, int, str]


def is_listening(record: SocketRecord) -> bool:
    """True for a socket that waits for what others send.

    A TCP LISTEN socket, an unconnected, bound UDP socket, and a raw IP,
    ICMP or packet socket with no remote end (they receive every packet of
    their protocol).
    """
    if record.family not in (AF_INET, AF_INET6) or record.protocol not in (
        IPPROTO_TCP, IPPROTO_UDP,
    ):  # fmt: skip
        return not record.remote_address
    if record.protocol == IPPROTO_TCP:
        return record.state == "LISTEN"
    return not record.remote_address and record.local_port != 0


Listeners = dict[Endpoint, list[SocketRecord]]
"""Endpoint -> the listening sockets serving it."""
Holders = Callable[[int], Sequence[int]]
"""Socket inode -> pids of every process holding it."""


def endpoint_of(record: SocketRecord) -> Endpoint:
    """(protocol, local port, local address) of a listener, '' for a wildcard address."""
    address = "" if record.local_address in _WILDCARDS else record.local_address
    return (record.protocol, record.local_port, address)


def listening_endpoints(records: Iterable[SocketRecord]) -> Listeners:
    """The endpoints that accept connections, for :func:`direction_of`.

    Returns:
        (protocol, local_port, local_address) -> the listening sockets there,
        with '' standing for a wildcard address (0.0.0.0 or ::).
    """
    endpoints: Listeners = {}
    for record in records:
        if is_listening(record):
            endpoints.setdefault(endpoint_of(record), []).append(record)
    return endpoints


def direction_of(
    record: SocketRecord, listeners: Listeners, holders: Holders | None = None
) -> str:
    """Classify a socket seen by sampling as 'listening', 'inbound', 'outbound' or ''.

    Sampling does not see who opened a connection (kernel events do, and
    their answer is taken instead where they run). The evidence here:

    - no listener serves the socket's local port (same protocol, same
      address or a wildcard): it was not accepted, so it is ``outbound``;
    - a listener does, and the socket's owner holds that listener (the
      server itself, or a worker that inherited it): ``inbound``;
    - a listener does, but the owner holds none of them: ``''``, unknown. A
      process can share a port with a listener (``SO_REUSEPORT``) and connect
      out from it; calling that inbound would hide it from rules on outbound
      connections.

    Args:
        record: the socket.
        listeners: the result of :func:`listening_endpoints` for the same sample.
        holders: socket inode -> every pid holding it (Linux); without it,
            the listeners' owners stand for their holders.
    """
    if is_listening(record):
        return "listening"
    if not record.remote_address:
        return ""
    serving = listeners.get((record.protocol, record.local_port, "")) or listeners.get(
        (record.protocol, record.local_port, record.local_address)
    )
    if not serving:
        return "outbound"
    if record.pid is None:
        return ""
    for listener in serving:
        if listener.pid == record.pid:
            return "inbound"
        if holders is not None and listener.socket and record.pid in holders(listener.socket):
            return "inbound"
    return ""


def community_id(record: SocketRecord) -> str | None:
    """Community ID v1 of the socket's 5-tuple, or None when it has no remote end.

    Seed 0. The value does not depend on which side is local. Computed as
    the specification defines it (corelight/community-id-spec, "Community
    ID v1"): SHA-1 over the 2-byte seed, the two addresses, the protocol
    number, a zero byte and the two ports, all in network byte order, with
    the endpoints ordered so the smaller address (then port) comes first;
    rendered as ``1:`` and the base64 digest. tests/extension/
    test_community_id.py checks it against the ``communityid`` library on
    random flows; this direct form is about fifty times faster, which
    matters because every connection row needs one.
    """
    if not record.remote_address or record.protocol not in (IPPROTO_TCP, IPPROTO_UDP):
        return None
    family = socket.AF_INET6 if record.family == AF_INET6 else socket.AF_INET
    try:
        local = socket.inet_pton(family, record.local_address)
        remote = socket.inet_pton(family, record.remote_address)
    except OSError:
        return None
    local_port, remote_port = record.local_port, record.remote_port
    if local < remote or (local == remote and local_port < remote_port):
        data = local + remote + _PROTO_PAD[record.protocol] + _PORTS.pack(local_port, remote_port)
    else:
        data = remote + local + _PROTO_PAD[record.protocol] + _PORTS.pack(remote_port, local_port)
    digest = hashlib.sha1(_SEED + data, usedforsecurity=False).digest()
    return "1:" + base64.b64encode(digest).decode("ascii")
