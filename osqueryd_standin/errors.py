"""Exceptions of the osqueryd stand-in (a test double, not osquery)."""

from __future__ import annotations

__all__ = ["StandinError", "StandinQueryError"]


class StandinError(Exception):
    """Base class of errors raised by the stand-in."""


class StandinQueryError(StandinError):
    """A query failed; ``str(err)`` is the message osqueryd would return.

    That is the SQLite error (e.g. "no such table: x") or an extension's
    non-zero status message, which makes the query fail (upstream osquery 5.23
    osquery/extensions/impl_thrift.cpp, osquery/sql/virtual_table.cpp xFilter).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
