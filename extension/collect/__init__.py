"""Collect stage: the host's TCP and UDP sockets.

A collector returns a list of :class:`extension.model.SocketRecord`; see
:class:`Collector`.
"""

from __future__ import annotations

from extension.collect.base import CollectError, Collector
from extension.collect.normalize import normalize_address
from extension.collect.psutil_source import PsutilCollector

__all__ = ["CollectError", "Collector", "PsutilCollector", "normalize_address", "select_collector"]


def select_collector() -> Collector:
    """The best collector for this platform (psutil everywhere for now)."""
    return PsutilCollector()
