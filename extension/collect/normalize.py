"""Address normalisation shared by every collector."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Sequence

from extension.model import AF_INET, AF_INET6

__all__ = ["COMM_LEN", "full_process_name", "normalize_address", "normalize_family"]

COMM_LEN = 15
"""Characters the Linux kernel keeps of a process name (TASK_COMM_LEN - 1,
include/linux/sched.h); macOS keeps 16 (MAXCOMLEN, sys/param.h)."""

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


def full_process_name(name: str | None, exe: str | None, argv: Sequence[str] = ()) -> str | None:
    """The process name, whole where the kernel cut it.

    The kernel keeps only the first 15 characters of a name (``comm``):
    ``tracked-connections-extension`` becomes ``tracked-connect``. A name of
    15 characters or more may be cut, so it is replaced by the base name of
    the executable, or of the first or second argument (a script run by an
    interpreter is its second), whichever first starts with it and is
    longer. psutil's ``Process.name()`` does the same with the first
    argument only; an interpreted script is why the second is tried too.

    Args:
        name: the kernel's (or psutil's) name, or None.
        exe: the executable path, or None.
        argv: the command line's arguments.

    Returns:
        the name, whole when one of those gives it; None when ``name`` is.
    """
    if name is None or len(name) < COMM_LEN:
        return name
    for candidate in (exe, *argv[:2]):
        if candidate:
            base = os.path.basename(candidate.rstrip("/"))
            if len(base) > len(name) and base.startswith(name):
                return base
    return name
