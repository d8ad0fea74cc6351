"""The typed event produced by the parse stage."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, cast

__all__ = ["Action", "ColumnValue", "Event", "new_event"]

Action = Literal["added", "removed", "snapshot"]
"""What happened to a row: osquery's differential ``added``/``removed``, or a row of a
snapshot query's full result (``snapshot``)."""

ColumnValue = str | int | None
"""A typed column value: ``int`` for INTEGER/BIGINT columns, ``str`` for TEXT and
unknown columns, None for an empty numeric."""


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """One result row of one scheduled query run on one host.

    Frozen. Constructed like the dataclass it is (every field by position or keyword,
    ``decorations`` optional); the constructor stores the fields through their slots
    directly, which is about twice as fast as a frozen dataclass's generated
    ``__init__`` (one ``object.__setattr__`` call per field): one event is built per
    result row on the ingestion hot path.

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
            present in the line. Read-only; from the parser usually a
            :class:`~alert_service.parse.row.Row`, which types a value when it is
            read.
        decorations: decoration name → text (``hostname``, ``host_uuid`` …), whether
            logged nested or top level; empty when there are none.
        logged: column → its text as logged, for the text columns whose osquery
            ``\\xNN`` escapes were decoded in ``columns``
            (:func:`alert_service.parse.values.decode_osquery_escapes`); empty when
            none was.
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
    logged: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __init__(  # noqa: PLR0917 - the dataclass's positional fields
        self,
        name: str,
        pack: str | None,
        query: str,
        host_identifier: str,
        calendar_time: str,
        unix_time: int,
        epoch: int,
        counter: int,
        action: Action,
        columns: Mapping[str, ColumnValue],
        decorations: Mapping[str, str] | None = None,
        logged: Mapping[str, str] | None = None,
    ) -> None:
        """Store the fields (``decorations`` and ``logged`` default to an empty mapping)."""
        _set_name(self, name)
        _set_pack(self, pack)
        _set_query(self, query)
        _set_host_identifier(self, host_identifier)
        _set_calendar_time(self, calendar_time)
        _set_unix_time(self, unix_time)
        _set_epoch(self, epoch)
        _set_counter(self, counter)
        _set_action(self, action)
        _set_columns(self, columns)
        _set_decorations(self, {} if decorations is None else decorations)
        _set_logged(self, _NONE if logged is None else logged)

    def column(self, name: str) -> ColumnValue:
        """Return the value of column ``name``, or None when the line lacks it."""
        return self.columns.get(name)


def _slot_setter(name: str) -> Callable[[Event, Any], None]:
    """The ``__set__`` of the slot of field ``name`` (bypasses the frozen ``__setattr__``)."""
    setter: Callable[[Event, Any], None] = Event.__dict__[name].__set__
    return setter


_set_name = _slot_setter("name")
_set_pack = _slot_setter("pack")
_set_query = _slot_setter("query")
_set_host_identifier = _slot_setter("host_identifier")
_set_calendar_time = _slot_setter("calendar_time")
_set_unix_time = _slot_setter("unix_time")
_set_epoch = _slot_setter("epoch")
_set_counter = _slot_setter("counter")
_set_action = _slot_setter("action")
_set_columns = _slot_setter("columns")
_set_decorations = _slot_setter("decorations")
_set_logged = _slot_setter("logged")
_NONE: Mapping[str, str] = MappingProxyType({})


class _EventBuilder:
    """An :class:`Event` under construction: the same slots, in the same order.

    Its ``__init__`` stores each field with a plain slot assignment and then makes the
    object an :class:`Event` (``__class__`` assignment; the layouts are the same), which
    costs about 0.3 µs instead of 0.7 for :class:`Event`'s own constructor.
    """

    __slots__ = Event.__slots__

    def __init__(  # noqa: PLR0917 - the dataclass's positional fields
        self,
        name: str,
        pack: str | None,
        query: str,
        host_identifier: str,
        calendar_time: str,
        unix_time: int,
        epoch: int,
        counter: int,
        action: Action,
        columns: Mapping[str, ColumnValue],
        decorations: Mapping[str, str],
        logged: Mapping[str, str],
    ) -> None:
        self.name = name
        self.pack = pack
        self.query = query
        self.host_identifier = host_identifier
        self.calendar_time = calendar_time
        self.unix_time = unix_time
        self.epoch = epoch
        self.counter = counter
        self.action = action
        self.columns = columns
        self.decorations = decorations
        self.logged = logged
        self.__class__ = Event  # type: ignore[assignment]


new_event = cast(
    Callable[
        [
            str,
            str | None,
            str,
            str,
            str,
            int,
            int,
            int,
            Action,
            Mapping[str, ColumnValue],
            Mapping[str, str],
            Mapping[str, str],
        ],
        Event,
    ],
    _EventBuilder,
)
"""Build an :class:`Event` from all twelve fields, by position (the parser's hot path;
equal to ``Event(...)`` with the same arguments, tests/alert_service/parse)."""
