"""Disjoint sorted integer ranges with ``bisect`` lookup (ports, IP addresses)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

__all__ = ["IntRanges"]


class IntRanges:
    """A union of inclusive integer ranges; overlapping and adjacent ranges are merged.

    Membership costs O(log n) in the number of merged ranges.

    Args:
        ranges: ``(start, end)`` pairs with ``start <= end``, in any order.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(ranges):
            if ends and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)
        self._starts = starts
        self._ends = ends

    def __len__(self) -> int:
        return len(self._starts)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, int) or isinstance(value, bool):
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def spans(self) -> list[tuple[int, int]]:
        """The merged inclusive ``(start, end)`` ranges, ascending."""
        return list(zip(self._starts, self._ends, strict=True))

    def contains(self, value: int) -> bool:
        """Return True when ``value`` is inside a range (``in`` without its type checks).

        For the hot path, where ``value`` is known to be an ``int`` (not a ``bool``).
        """
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]
