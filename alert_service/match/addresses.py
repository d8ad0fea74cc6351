"""CIDR membership for remote addresses with sorted integer ranges and ``bisect``.

Uses only the standard library: :mod:`ipaddress` defines what an address or network is.
Rules list their networks explicitly; ``ipaddress``'s ``is_private`` is never used, so
what matches is the user's list, not a Python version's idea of private. IPv4-mapped
IPv6 addresses (``::ffff:10.0.0.1``) and networks (``::ffff:10.0.0.0/104``) are
unwrapped to IPv4, so IPv4 rules apply to them.

On the hot path an event's address becomes one integer, its *address number*
(:func:`address_number`): the 32-bit value of an IPv4 address, or
:data:`IPV6_OFFSET` plus the 128-bit value of an IPv6 address, so both families live
in one ordered space and a membership test is one ``bisect``. The text is read with
``socket.inet_pton``; IPv6 text is accepted only when ``socket.inet_ntop`` writes the
same text back (the canonical form, which :mod:`ipaddress` reads as the same address),
any other (a zone suffix, uppercase hex, an embedded IPv4 form) goes through
:func:`parse_address`. IPv4 text needs no such check: ``inet_pton`` accepts only the
dotted quad without leading zeros, which is all :mod:`ipaddress` accepts. Both ways
accept exactly what :mod:`ipaddress` accepts (property tests).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton
from typing import Final

from alert_service.errors import MatchError
from alert_service.match.ranges import IntRanges

__all__ = [
    "ADDRESS_CACHE_ENTRIES",
    "IPV6_OFFSET",
    "AddressSet",
    "address_number",
    "cached_address_number",
    "network_span",
    "parse_address",
    "parse_network",
    "remembered_address_number",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_PREFIX: Final = 0xFFFF  # the upper 96 bits of ::ffff:0:0/96

IPV6_OFFSET: Final = 1 << 128
"""Added to an IPv6 address's value to make its address number (IPv4 numbers are
below ``2**32``, so the families never meet)."""


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


def _number_of(addr: IPAddress) -> int:
    return int(addr) if addr.version == 4 else int(addr) + IPV6_OFFSET


def address_number(text: object) -> int | None:
    """Return the address number of ``text`` (see the module docs), or None.

    The same addresses as :func:`parse_address` give None (no text, unparsable text,
    ``0.0.0.0``, ``::``), and IPv4-mapped IPv6 gives the IPv4 number, but no
    :mod:`ipaddress` object is built for canonical text (about 0.4 µs instead of 1.6
    for an IPv4 address on the benchmark machine).

    Returns:
        ``value`` (IPv4, ``0 < value < 2**32``) or ``IPV6_OFFSET + value`` (IPv6).
    """
    if not isinstance(text, str) or not text:
        return None
    if ":" not in text:
        # IPv4: inet_pton accepts only the dotted quad of four decimal octets without
        # leading zeros (glibc, musl and the BSDs alike), the only form ipaddress
        # accepts, so the text is canonical once it parses (the property tests hold
        # it against parse_address).
        try:
            value = int.from_bytes(inet_pton(AF_INET, text), "big")
        except (OSError, ValueError):  # ValueError: an embedded NUL
            return None
        return value if value else None
    family = AF_INET6
    try:
        packed = inet_pton(family, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        packed = None
    if packed is None or inet_ntop(family, packed) != text:
        addr = parse_address(text)
        return _number_of(addr) if addr is not None else None
    value = int.from_bytes(packed, "big")
    if family == AF_INET6:
        if value >> 32 != _MAPPED_PREFIX:
            return value + IPV6_OFFSET if value else None
        value &= 0xFFFFFFFF
    return value if value else None


ADDRESS_CACHE_ENTRIES: Final = 65536
"""Most address texts :func:`cached_address_number` keeps; emptied when full."""

_NUMBER_CACHE: dict[str, int | None] = {}
_MISSING: Final = -1  # not an address number (those are > 0) nor None


remembered_address_number: Final[Callable[[object, int], int | None]] = _NUMBER_CACHE.get  # type: ignore[assignment]
"""``(text, missing)`` → the number :func:`cached_address_number` remembers for
``text``, else ``missing`` (a number no address has, e.g. -1): the cache's own
``dict.get``, for a caller that saves the call on a hit."""


def cached_address_number(text: object) -> int | None:
    """:func:`address_number`, remembered for the last texts seen (at most
    :data:`ADDRESS_CACHE_ENTRIES`).

    The peers of one host repeat, and a ``removed`` row repeats the address of its
    ``added`` row: a dict lookup instead of ``inet_pton``, ``inet_ntop`` and
    ``int.from_bytes``. Only text is remembered; the same value either way
    (tests/alert_service/parse/test_parse_fastpaths.py).
    """
    if text.__class__ is not str:
        return address_number(text)
    number = _NUMBER_CACHE.get(text, _MISSING)
    if number == _MISSING:
        number = address_number(text)
        if len(_NUMBER_CACHE) >= ADDRESS_CACHE_ENTRIES:
            _NUMBER_CACHE.clear()
        _NUMBER_CACHE[text] = number
    return number


def parse_network(text: str, where: str = "") -> IPNetwork:
    """Parse one CIDR or address of a rule, unwrapping IPv4-mapped IPv6 networks.

    Raises:
        MatchError: not a network, host bits set (``10.0.0.1/8``), or not a string.
    """
    if not isinstance(text, str):
        raise MatchError(f"invalid CIDR {text!r}: not text", where)
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise MatchError(f"invalid CIDR {text!r}: {err}", where) from err
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


def network_span(text: str, where: str = "") -> tuple[int, int, int]:
    """Return ``(version, first, last)`` of the network :func:`parse_network` reads in
    ``text``: its IP version and its first and last address as integers (without
    :data:`IPV6_OFFSET`).

    Canonical text (``192.0.2.0/24``, ``198.51.100.7``, ``2001:db8::/48``: the text
    ``socket.inet_ntop`` writes, a prefix length without leading zeros) is read with
    ``socket.inet_pton``, about ten times faster than building an :mod:`ipaddress`
    network (an IOC list of 10k entries is read at every start); any other text, and
    IPv4-mapped IPv6, goes through :func:`parse_network`, so both ways give the same
    span and the same errors (tests/alert_service/parse/test_parse_fastpaths.py).

    Raises:
        MatchError: as :func:`parse_network`.
    """
    address, slash, length = text.partition("/") if isinstance(text, str) else ("", "", "")
    family = AF_INET6 if ":" in address else AF_INET
    bits = 128 if family == AF_INET6 else 32
    prefix = bits
    if slash:
        prefix = int(length) if length.isascii() and length.isdigit() else -1
        if prefix > bits or str(prefix) != length:
            prefix = -1
    packed = None
    if address and prefix >= 0:
        try:
            packed = inet_pton(family, address)
        except (OSError, ValueError):
            packed = None
    if packed is not None and inet_ntop(family, packed) == address:
        first = int.from_bytes(packed, "big")
        host = (1 << (bits - prefix)) - 1
        if not first & host and (bits == 32 or first >> 32 != _MAPPED_PREFIX):
            return (4 if bits == 32 else 6), first, first | host
    net = parse_network(text, where)
    return net.version, int(net.network_address), int(net.broadcast_address)


class AddressSet:
    """A set of IPv4 and IPv6 networks, one sorted range list of address numbers.

    Args:
        cidrs: networks (``10.0.0.0/8``) or single addresses (``192.0.2.7``); host bits
            must be zero.
        where: location of the list in the rule, e.g. ``.remote_address.include``;
            errors point at the bad item.

    Attributes:
        contains_number: ``contains_number(number) -> bool``, True when the address
            number (an int from :func:`address_number`) is inside one of the networks;
            the hot-path form of ``addr in address_set``.

    Raises:
        MatchError: an item is not a valid network.
    """

    __slots__ = ("_ranges", "contains_number")

    def __init__(self, cidrs: Iterable[str], where: str = "") -> None:
        spans: list[tuple[int, int]] = []
        for i, text in enumerate(cidrs):
            net = parse_network(text, f"{where}[{i}]")
            offset = 0 if net.version == 4 else IPV6_OFFSET
            spans.append((int(net.network_address) + offset, int(net.broadcast_address) + offset))
        self._ranges = IntRanges(spans)
        self.contains_number = self._ranges.contains

    def __len__(self) -> int:
        """Merged ranges (both families)."""
        return len(self._ranges)

    def spans(self) -> list[tuple[int, int]]:
        """The networks as merged inclusive ranges of address numbers, ascending."""
        return self._ranges.spans()

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return self._ranges.contains(_number_of(addr))
