"""Exact port matching: single ports in a set, ranges as sorted bounds."""

from __future__ import annotations

import re
from collections.abc import Iterable

from alert_service.errors import MatchError
from alert_service.match.ranges import IntRanges

__all__ = ["PortSet", "parse_port_item"]

_RANGE_RE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")
_MAX_PORT = 65535


def parse_port_item(item: int | str, where: str = "") -> tuple[int, int]:
    """Return the inclusive ``(low, high)`` ports of one rule item.

    Raises:
    MatchError: not a port 0-65535 or a range ``a-b`` with ``a <= b``.
    """
    if isinstance(item, bool):
        raise MatchError(f"invalid port {item!r}", where)
    if isinstance(item, int):
        low = high = item
    else:
        m = _RANGE_RE.fullmatch(item.strip())
        if m is None:
            raise MatchError(f'invalid port or range {item!r}: use 443 or "6660-6669"', where)
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
    if not (0 <= low <= _MAX_PORT and 0 <= high <= _MAX_PORT):
        raise MatchError(f"port out of range 0-65535: {item!r}", where)
    if low > high:
        raise MatchError(f"empty port range {item!r}: start is above end", where)
    return low, high


class PortSet:
    """Ports and inclusive port ranges; membership is exact (443 is not 8443).

    Args:
        items: ints (``443``), decimal text (``"443"``) or ranges (``"6660-6669"``).
        where: location of the list in the rule, e.g. ``.remote_port``.

    Raises:
        MatchError: an item is not a port 0-65535 or a range ``a-b`` with ``a <= b``.
    """

    __slots__ = ("_ranges", "_singles")

    def __init__(self, items: Iterable[int | str], where: str = "") -> None:
        singles: set[int] = set()
        ranges: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            low, high = parse_port_item(item, f"{where}[{i}]")
            if low == high:
                singles.add(low)
            else:
                ranges.append((low, high))
        self._singles = frozenset(singles)
        self._ranges = IntRanges(ranges)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int) or isinstance(port, bool):
            return False
        return port in self._singles or port in self._ranges
