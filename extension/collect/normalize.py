"""Address normalisation shared by every collector."""

from __future__ import annotations

import ipaddress
import socket

from extension.model import AF_INET, AF_INET6

__all__ = ["normalize_address", "normalize_family"]

_V4_MAPPED_PREFIX = "::ffff:"


def normalize_family(os_family: int) -> int:
    """Map an OS address family number to osquery's 2 (IPv4) / 10 (IPv6).

    macOS (30) and Windows (23) number AF_INET6 differently from Linux (10).

    Raises:
        ValueError: the family is neither IPv4 nor IPv6.
    """
    if os_family == socket.AF_INET:
        return AF_INET
    if os_family == socket.AF_INET6:
        return AF_INET6
    raise ValueError(f"not an IP address family: {os_family}")


def normalize_address(family: int, address: str) -> tuple[int, str]:
    """Unmap IPv4-mapped IPv6 addresses and canonicalise the text form.

    Args:
        family: 2 or 10.
        address: textual IP address, or '' for none.

    Returns:
        (family, address): ``::ffff:a.b.c.d`` becomes (2, 'a.b.c.d'); a
        wildcard ``::`` listener stays (10, '::'); '' stays ''.
    """
    if family != AF_INET6 or not address:
        return family, address
    lowered = address.lower()
    if lowered.startswith(_V4_MAPPED_PREFIX) and "." in lowered:
        return AF_INET, lowered[len(_V4_MAPPED_PREFIX) :]
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return family, address
    mapped = parsed.ipv4_mapped
    if mapped is not None:
        return AF_INET, str(mapped)
    return family, address
