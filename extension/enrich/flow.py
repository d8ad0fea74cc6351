"""Flow attributes derived from the socket list: direction and Community ID."""

from __future__ import annotations

from collections.abc import Iterable

import communityid

from extension.model import IPPROTO_TCP, IPPROTO_UDP, SocketRecord

__all__ = ["community_id", "direction_of", "listening_endpoints"]

_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
_CID = communityid.CommunityID()

# (protocol, local_port, local_address); local_address is '' for a wildcard bind.
Endpoint = tuple[int, int, str]


def is_listening(record: SocketRecord) -> bool:
    """True for a TCP LISTEN socket or an unconnected, bound UDP socket."""
    if record.protocol == IPPROTO_TCP:
        return record.state == "LISTEN"
    return record.protocol == IPPROTO_UDP and not record.remote_address and record.local_port != 0


def listening_endpoints(records: Iterable[SocketRecord]) -> frozenset[Endpoint]:
    """The endpoints that accept connections, for :func:`direction_of`.

    Returns:
        frozenset of (protocol, local_port, local_address) with '' standing for
        a wildcard address (0.0.0.0 or ::).
    """
    endpoints: set[Endpoint] = set()
    for record in records:
        if is_listening(record):
            address = "" if record.local_address in _WILDCARDS else record.local_address
            endpoints.add((record.protocol, record.local_port, address))
    return frozenset(endpoints)


def direction_of(record: SocketRecord, listeners: frozenset[Endpoint]) -> str:
    """Classify a socket as 'listening', 'inbound', 'outbound' or ''.

    A connected socket whose local port is served by a listener on the same
    protocol (same address or a wildcard) was accepted, so it is inbound;
    any other connected socket is outbound.

    Args:
        record: the socket.
        listeners: the result of :func:`listening_endpoints` for the same sample.
    """
    if is_listening(record):
        return "listening"
    if not record.remote_address:
        return ""
    if (record.protocol, record.local_port, "") in listeners or (
        record.protocol,
        record.local_port,
        record.local_address,
    ) in listeners:
        return "inbound"
    return "outbound"


def community_id(record: SocketRecord) -> str | None:
    """Community ID v1 of the socket's 5-tuple, or None when it has no remote end.

    Computed with the ``communityid`` library (corelight/community-id-spec),
    seed 0. The value does not depend on which side is local.
    """
    if not record.remote_address or record.protocol not in (IPPROTO_TCP, IPPROTO_UDP):
        return None
    try:
        flow = communityid.FlowTuple(
            record.protocol,
            record.local_address,
            record.remote_address,
            record.local_port,
            record.remote_port,
        )
        return str(_CID.calc(flow))
    except communityid.Error:
        return None
