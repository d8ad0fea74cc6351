"""The collector interface."""

from __future__ import annotations

from typing import Protocol

from extension.model import SocketRecord

__all__ = ["CollectError", "Collector"]


class CollectError(Exception):
    """The socket list could not be read at all (not: one socket was odd)."""


class Collector(Protocol):
    """Something that lists the host's sockets."""

    def collect(self) -> list[SocketRecord]:
        """Return every TCP/UDP socket on the host.

        Returns:
            list of SocketRecord, in no particular order.

        Raises:
            CollectError: the list could not be produced; a partial list is
                never returned in its place.
        """
        ...
