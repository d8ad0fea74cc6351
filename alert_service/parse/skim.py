"""Skim an event-form line: what the rule index and the baseline read, and the checks.

Most lines match no rule (docs/design/alert-matching.md, "Passing over rows"). For
them the pipeline needs the line's head (``name``, ``hostIdentifier``, ``action``,
``unixTime``, ``epoch``, ``counter``), the few columns the rule index reads, and the
certainty that ``parse_line`` would accept the line — nothing it builds. :func:`skim_line`
gives exactly that, from one msgspec decode into fixed structs:

* the columns are a :class:`SkimColumns`, one field per column of the
  ``tracked_connections`` contract (extension/columns.py): msgspec matches the member
  names to fields without building a key string or a dict, and a line with any other
  column, a number column that is not JSON text, or a text column that is neither
  text nor ``null``, fails to decode (``None``: the caller takes the full path, which
  decides);
* the INTEGER/BIGINT values are checked as :func:`~alert_service.parse.row.text_row`
  checks them (empty or plain ASCII decimal of at most ``MAX_INT_DIGITS`` digits:
  the length while decoding, the digits of all of them joined with two C calls), so
  a line skimmed is a line whose numbers ``parse_line`` accepts in strict mode too;
* :meth:`SkimColumns.get` reads a column as the event's columns give it (typed),
  which is all :meth:`~alert_service.match.RuleSet.cannot_match` reads.

A line the index keeps as a candidate is decoded again in full
(:func:`~alert_service.parse.line.event_form_row`, else ``parse_line``): about one in
a hundred. tests/alert_service/parse/test_parse_skim.py proves, on random and on
corrupted lines, that a skimmed line is one ``parse_line`` turns into one event with
the same head and the same typed column values, and that every line of the
contract's columns ``event_form_row`` takes is skimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Annotated, Final, Literal, TypeVar

import msgspec

from alert_service.parse.event import ColumnValue
from alert_service.parse.values import MAX_INT_DIGITS, NUMERIC_COLUMNS

__all__ = ["SkimColumns", "SkimLine", "skim_line", "skimmer"]


_Number = Annotated[str, msgspec.Meta(max_length=MAX_INT_DIGITS)]
"""An INTEGER/BIGINT column's text: longer text fails to decode (the full path
reports it)."""


class SkimColumns(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The columns of one ``tracked_connections`` row as logged.

    One field per column of extension/columns.py ``COLUMNS`` (a test keeps them
    equal), in name order: osquery writes a row's columns sorted by name (its
    ``Row`` is a ``std::map``, osquery/core/sql/row.h in osquery 5.x), and msgspec
    matches members that come in the declared order fastest (about 0.2 µs a line
    here). An INTEGER/BIGINT column is text (``""`` when the row lacks it, which
    reads as None, as an empty one does: the index cannot tell them apart, and a line
    it keeps is decoded again in full). A TEXT column is text or None (JSON
    ``null``, or the row lacks it), as the event's column reads.
    """

    cmdline: str | None = None
    community_id: str | None = None
    direction: str | None = None
    family: _Number = ""
    first_seen: _Number = ""
    interface: str | None = None
    last_seen: _Number = ""
    local_address: str | None = None
    local_port: _Number = ""
    name: str | None = None
    net_namespace: _Number = ""
    parent: _Number = ""
    parent_name: str | None = None
    parent_path: str | None = None
    path: str | None = None
    pid: _Number = ""
    protocol: _Number = ""
    remote_address: str | None = None
    remote_hostname: str | None = None
    remote_hostname_source: str | None = None
    remote_port: _Number = ""
    socket: _Number = ""
    start_time: _Number = ""
    state: str | None = None
    status: str | None = None
    uid: _Number = ""
    username: str | None = None

    def get(self, key: str) -> ColumnValue:
        """Column ``key`` as the line's event gives it (``event.columns.get(key)``):
        the text of a TEXT column (None for ``null``), the ``int`` of an
        INTEGER/BIGINT one (None when empty), None for a column the row lacks or the
        contract does not have."""
        if key in _TEXT_FIELDS:
            text: str | None = getattr(self, key)
            return text
        if key in _NUMERIC_FIELDS:
            value: str = getattr(self, key)
            return int(value) if value else None
        return None


_NUMERIC_FIELDS: Final = frozenset(NUMERIC_COLUMNS)
_TEXT_FIELDS: Final = frozenset(SkimColumns.__struct_fields__) - _NUMERIC_FIELDS
_numeric_texts: Final = attrgetter(*sorted(NUMERIC_COLUMNS))


class SkimLine(msgspec.Struct, rename="camel", forbid_unknown_fields=True, gc=False, kw_only=True):
    """An event-form line as osquery writes it, with :class:`SkimColumns`.

    The members and their types are those of the full path's ``EventLine``
    (alert_service/parse/line.py), with the known ``action`` and the non-empty
    ``name`` it requires checked while decoding; declared in the order osquery writes
    them (docs/design/osquery-interfaces.md §4).
    """

    name: Annotated[str, msgspec.Meta(min_length=1)]
    host_identifier: str
    calendar_time: str = ""
    unix_time: int
    epoch: int = 0
    counter: int = 0
    numerics: object = None  # any JSON value: not read
    decorations: dict[str, str] | None = None
    columns: SkimColumns
    action: Literal["added", "removed", "snapshot"]


_S = TypeVar("_S", bound=SkimLine)


def skimmer(kind: type[_S]) -> Callable[[bytes], _S | None]:
    """:func:`skim_line` decoding into ``kind``, a subclass of :class:`SkimLine` with
    methods of its own (the rule index reads the line through one,
    alert_service/match/conditions.py ``SkimView``)."""
    decode = msgspec.json.Decoder(kind).decode

    def skim(line: bytes) -> _S | None:
        if b"\\" in line:
            return None
        try:
            skimmed = decode(line)
        except (msgspec.DecodeError, RecursionError):
            return None
        # Every number is empty or ASCII decimal (at most MAX_INT_DIGITS, checked while
        # decoding): all of them joined are ASCII digits, two C calls.
        digits = "".join(_numeric_texts(skimmed.columns))
        if digits and not (digits.isdigit() and digits.isascii()):
            return None
        return skimmed

    return skim


skim_line: Final[Callable[[bytes], SkimLine | None]] = skimmer(SkimLine)
"""The skimmed line, or None: call ``event_form_row`` / ``parse_line``.

Not None only when ``parse_line(line)`` (any ``known_packs``, strict or not) gives one
event whose ``name``, ``host_identifier``, ``unix_time``, ``epoch``, ``counter`` and
``action`` are the skimmed line's and whose ``columns.get(c)`` is ``columns.get(c)``
of the skim for every column ``c``. None for a line with a backslash (an escape to
decode), of another shape or with other columns, or with a number ``text_row`` does
not accept."""
