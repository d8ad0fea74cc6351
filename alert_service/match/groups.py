"""One aggregation group's state and its stored JSON form.

:class:`Group` is what :class:`~alert_service.match.aggregate.Aggregator` keeps per
rule and group: the window's start, the count, the distinct values or row keys, the
beacon's connection times and the sample rows. :mod:`alert_service.state.windows`
stores it as :meth:`Group.to_text` (one row per group) or inside a batch's change row,
keyed by :func:`group_key`. JSON: RFC 8259; text is UTF-8 except where a value holds
a lone surrogate (see :func:`encode`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from alert_service.parse.event import ColumnValue

__all__ = ["Group", "encode", "group_key", "values_of"]


_encode_utf8 = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode(value: object) -> str:
    """Compact JSON of a value (encoders built once: ``json.dumps`` with options builds
    a new one per call). UTF-8 text, except that text holding a lone surrogate (left
    by an osquery ``\\xNN`` escape) is written as ASCII with escapes: the database
    stores only valid UTF-8."""
    text = _encode_utf8(value)
    if not text.isascii() and _SURROGATE.search(text):
        return _encode_ascii(value)
    return text


def group_key(values: Sequence[ColumnValue]) -> str:
    """The stored key of a group: its values as compact JSON."""
    return encode(list(values))


def values_of(key: str) -> tuple[ColumnValue, ...]:
    """The group values of a stored key (inverse of :func:`group_key`)."""
    return tuple(json.loads(key))



class Group:
    """One group's window (JSON-able through :meth:`to_doc`).

    A plain class with ``__slots__`` (not a dataclass: one is built per new group, on
    the hot path). Containers left out are created empty.

    Attributes:
        start: unixTime the window opened, seconds.
        last: unixTime of the last counted event.
        count: events counted (``event_count``; after the crossing too).
        values: distinct values seen (``value_count``; kept until the crossing).
        rows: keys of rows counted (so a counter-0 re-log is not counted again; kept
            until the crossing).
        times: beacon: (start time, row key) of connections in the window, oldest first.
        sample: rows for the alert.
        fired: the window has alerted (beacon: unixTime until which it stays quiet).
        stored: ``(len(values), len(rows), len(sample) or -1)`` when the state
            database last got this group whole or its change
            (:mod:`alert_service.state.windows`), so the next change row carries only
            what was added since; None: not stored as this object yet (the next
            change row carries it whole). Not part of the group's state
            (:meth:`to_doc`, ``==``).
    """

    __slots__ = (
        "count", "fired", "last", "rows", "sample", "start", "stored", "times", "values",
    )  # fmt: skip

    def __init__(
        self,
        start: int,
        last: int,
        *,
        count: int = 0,
        values: dict[ColumnValue, None] | None = None,
        rows: dict[tuple[ColumnValue, ...], None] | None = None,
        times: list[list[Any]] | None = None,
        sample: list[Mapping[str, ColumnValue]] | None = None,
        fired: int = 0,
    ) -> None:
        self.start = start
        self.last = last
        self.count = count
        self.values: dict[ColumnValue, None] = {} if values is None else values
        self.rows: dict[tuple[ColumnValue, ...], None] = {} if rows is None else rows
        self.times: list[list[Any]] = [] if times is None else times
        self.sample: list[Mapping[str, ColumnValue]] = [] if sample is None else sample
        self.fired = fired
        self.stored: tuple[int, int, int] | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Group):
            return NotImplemented
        return self.to_doc() == other.to_doc()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Group({self.to_doc()!r})"

    def to_doc(self) -> dict[str, Any]:
        """The group as a JSON-able dict."""
        return {
            "start": self.start, "last": self.last, "count": self.count,
            "values": list(self.values), "rows": [list(r) for r in self.rows],
            "times": self.times,
            "sample": [dict(r) for r in self.sample], "fired": self.fired,
        }  # fmt: skip

    def to_text(self, rows: dict[int, str]) -> str:
        """:meth:`to_doc` as compact JSON, without building the dict.

        Args:
            rows: sample row ``id()`` → its JSON, filled and reused by the caller
                within one save (one event's row sits in the samples of several
                rules' groups, and is encoded once).
        """
        sample: list[str] = []
        for row in self.sample:
            text = rows.get(id(row))
            if text is None:
                text = rows[id(row)] = encode(row if row.__class__ is dict else dict(row))
            sample.append(text)
        return (
            f'{{"start":{int(self.start)},"last":{int(self.last)},"count":{int(self.count)},'
            f'"values":{encode(list(self.values))},"rows":{encode(list(self.rows))},'
            f'"times":{encode(self.times)},"sample":[{",".join(sample)}],'
            f'"fired":{int(self.fired)}}}'
        )

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Group:
        """Rebuild a group from :meth:`to_doc`'s dict (raises KeyError/TypeError if bad)."""
        return cls(
            int(doc["start"]),
            int(doc["last"]),
            count=int(doc["count"]),
            values=dict.fromkeys(doc["values"]),
            rows=dict.fromkeys(tuple(r) for r in doc["rows"]),
            times=[list(t) for t in doc["times"]],
            sample=[dict(r) for r in doc["sample"]],
            fired=int(doc["fired"]),
        )
