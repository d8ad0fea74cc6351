"""The typed event produced by the parse stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Action", "ColumnValue", "Event"]

Action = Literal["added", "removed", "snapshot"]
"""What happened to a row: osquery's differential ``added``/``removed``, or a row of a
snapshot query's full result (``snapshot``)."""

ColumnValue = str | int | None
"""A typed column value: ``int`` for INTEGER/BIGINT columns, ``str`` for TEXT and
unknown columns, None for an empty numeric."""


@dataclass(frozen=True, slots=True)
class Event:
    """One result row of one scheduled query run on one host.

    Attributes:
        name: the query name as logged, e.g.
            ``pack_tracked_connections_tracked_connections`` or
            ``pack/Global/tracked_connections``.
        pack: pack part of ``name`` (``tracked_connections``, ``Global``,
            ``team-3``), or None for a name outside a pack.
        query: query part of ``name`` (the whole name outside a pack).
        host_identifier: ``hostIdentifier`` (hostname by default; a UUID with
            ``--host_identifier=uuid``).
        calendar_time: ``calendarTime`` text, e.g. ``Tue Sep  2 07:05:09 2025 UTC``;
            ``""`` when absent.
        unix_time: ``unixTime``, seconds since the Unix epoch.
        epoch: ``epoch`` (osquery ``--schedule_epoch``), 0 when absent.
        counter: ``counter``: 0 on a first run (every row logged as added), then
            increasing; always 0 for snapshots.
        action: ``added``, ``removed`` or ``snapshot``.
        columns: column name → typed value (see
            :func:`alert_service.parse.values.normalise_columns`); only the columns
            present in the line.
        decorations: decoration name → text (``hostname``, ``host_uuid`` …), whether
            logged nested or top level; empty when there are none.
    """

    name: str
    pack: str | None
    query: str
    host_identifier: str
    calendar_time: str
    unix_time: int
    epoch: int
    counter: int
    action: Action
    columns: Mapping[str, ColumnValue] = field(hash=False)
    decorations: Mapping[str, str] = field(default_factory=dict, hash=False)

    def column(self, name: str) -> ColumnValue:
        """Return the value of column ``name``, or None when the line lacks it."""
        return self.columns.get(name)
