"""Exact integer matching (ports, uids): single values in a set, ranges as sorted bounds."""

from __future__ import annotations

import re
from collections.abc import Iterable

from alert_service.errors import MatchError
from alert_service.match.ranges import IntRanges

__all__ = ["MAX_PORT", "MAX_UID", "NumberSet", "PortSet", "parse_number_item", "parse_port_item"]

_RANGE_RE = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
MAX_PORT = 65535
"""Largest TCP/UDP port."""
MAX_UID = 2**32 - 1
"""Largest uid (``uid_t`` is 32-bit on Linux and macOS)."""


def parse_number_item(
    item: int | str, where: str = "", *, maximum: int = MAX_PORT, what: str = "port"
) -> tuple[int, int]:
    """Return the inclusive ``(low, high)`` of one rule item.

    Args:
        item: an int (``443``), decimal text (``"443"``) or a range (``"6660-6669"``).
        where: location of the item in the rule, for the error.
        maximum: largest allowed value.
        what: the noun used in messages (``port``, ``uid``).

    Raises:
        MatchError: not a value 0..maximum or a range ``a-b`` with ``a <= b`` (any
            other type, e.g. a float or a list, included).
    """
    if isinstance(item, bool) or not isinstance(item, int | str):
        raise MatchError(f"invalid {what} {item!r}", where)
    if isinstance(item, int):
        low = high = item
    else:
        m = _RANGE_RE.fullmatch(item.strip())
        if m is None:
            raise MatchError(f'invalid {what} or range {item!r}: use 443 or "6660-6669"', where)
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
    if not (0 <= low <= maximum and 0 <= high <= maximum):
        raise MatchError(f"{what} out of range 0-{maximum}: {item!r}", where)
    if low > high:
        raise MatchError(f"empty {what} range {item!r}: start is above end", where)
    return low, high


def parse_port_item(item: int | str, where: str = "") -> tuple[int, int]:
    """Return the inclusive ``(low, high)`` ports of one rule item.

    Raises:
        MatchError: not a port 0-65535 or a range ``a-b`` with ``a <= b``.
    """
    return parse_number_item(item, where)


class NumberSet:
    """Integers and inclusive ranges; membership is exact (443 is not 8443).

    Args:
        items: ints (``443``), decimal text (``"443"``) or ranges (``"6660-6669"``).
        where: location of the list in the rule, e.g. ``.remote_port``.
        maximum: largest allowed value.
        what: the noun used in messages.

    Raises:
        MatchError: an item is not a value 0..maximum or a range ``a-b`` with ``a <= b``.
    """

    __slots__ = ("_ranges", "_singles")

    def __init__(
        self,
        items: Iterable[int | str],
        where: str = "",
        *,
        maximum: int = MAX_PORT,
        what: str = "port",
    ) -> None:
        singles: set[int] = set()
        ranges: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            low, high = parse_number_item(item, f"{where}[{i}]", maximum=maximum, what=what)
            if low == high:
                singles.add(low)
            else:
                ranges.append((low, high))
        self._singles = frozenset(singles)
        self._ranges = IntRanges(ranges) if ranges else None

    @property
    def singles(self) -> frozenset[int]:
        """The single values."""
        return self._singles

    def spans(self) -> list[tuple[int, int]]:
        """The ranges (merged inclusive ``(low, high)``), without the single values."""
        return self._ranges.spans() if self._ranges is not None else []

    def __contains__(self, value: object) -> bool:
        if value.__class__ is not int and (not isinstance(value, int) or isinstance(value, bool)):
            return False
        if value in self._singles:
            return True
        return self._ranges is not None and self._ranges.contains(value)


class PortSet(NumberSet):
    """Ports 0-65535 and inclusive port ranges (see :class:`NumberSet`).

    Raises:
        MatchError: an item is not a port 0-65535 or a range ``a-b`` with ``a <= b``.
    """

    __slots__ = ()

    def __init__(self, items: Iterable[int | str], where: str = "") -> None:
        super().__init__(items, where, maximum=MAX_PORT, what="port")
