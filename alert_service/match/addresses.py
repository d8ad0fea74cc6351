"""CIDR membership for remote addresses with sorted integer ranges and ``bisect``.

Uses only the standard :mod:`ipaddress` module (alerting-delivery-and-tailing.md §3:
explicit lists, no ``is_private``). IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``)
and networks (``::ffff:10.0.0.0/104``) are unwrapped to IPv4, so IPv4 rules apply to
them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from alert_service.errors import MatchError
from alert_service.match.ranges import IntRanges

__all__ = ["AddressSet", "parse_address", "parse_network"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_address(text: object) -> IPAddress | None:
    """Return the address in ``text``, unwrapping IPv4-mapped IPv6; None if there is none.

    Empty text, unparsable text and the unspecified addresses (``0.0.0.0``, ``::``,
    which listening and unconnected sockets report) all give None: they name no peer.
    A zone suffix (``fe80::1%eth0``) is accepted.
    """
    if not isinstance(text, str) or not text:
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_unspecified:
        return None
    return addr


def parse_network(text: str, where: str = "") -> IPNetwork:
    """Parse one CIDR or address of a rule, unwrapping IPv4-mapped IPv6 networks.

    Raises:
        MatchError: not a network, or host bits set (``10.0.0.1/8``).
    """
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise MatchError(f"invalid CIDR {text!r}: {err}", where) from err
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


class AddressSet:
    """A set of IPv4 and IPv6 networks.

    Args:
        cidrs: networks (``10.0.0.0/8``) or single addresses (``192.0.2.7``); host bits
            must be zero.
        where: location of the list in the rule, e.g. ``.remote_address.include``;
            errors point at the bad item.

    Raises:
        MatchError: an item is not a valid network.
    """

    __slots__ = ("_v4", "_v6")

    def __init__(self, cidrs: Iterable[str], where: str = "") -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for i, text in enumerate(cidrs):
            net = parse_network(text, f"{where}[{i}]")
            span = (int(net.network_address), int(net.broadcast_address))
            (v4 if net.version == 4 else v6).append(span)
        self._v4 = IntRanges(v4)
        self._v6 = IntRanges(v6)

    def __len__(self) -> int:
        return len(self._v4) + len(self._v6)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        ranges = self._v4 if addr.version == 4 else self._v6
        return int(addr) in ranges
