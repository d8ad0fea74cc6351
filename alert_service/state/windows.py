"""Aggregation windows in the state database, written with the batch's outbox rows.

Two tables (created here when missing)::

    aggregate_windows:            -- the groups as of the last compaction
        rule TEXT, group_key TEXT,    -- the rule name and the group's values as JSON
        state TEXT,                   -- Group.to_doc() as JSON (match/groups.py)
        updated_at DOUBLE PRECISION,  -- seconds since the Unix epoch
        PRIMARY KEY (rule, group_key)
    aggregate_window_changes:     -- one row per batch since then
        seq BIGINT PRIMARY KEY,       -- 1, 2, ... in the order the batches committed
        changes TEXT,                 -- the batch's changes as JSON (see below)
        updated_at DOUBLE PRECISION

``DOUBLE PRECISION`` is an 8-byte float on PostgreSQL (its ``REAL`` has 4 bytes, too few
for seconds since the epoch) and a ``REAL`` column on SQLite (affinity rules,
https://sqlite.org/datatype3.html section 3.1).

A batch changes many groups a little (one count more, one value more); most groups
of a scan rule are new and never seen again. Writing each changed group as its own
row cost more than reading and matching the batch, so :meth:`WindowStore.save` writes
*one* ``aggregate_window_changes`` row per batch, encoded in one call
(:func:`encode_changes`). Every :data:`COMPACT_AFTER` batches (or once
:data:`FOLD_GROUPS` groups changed) it folds them into ``aggregate_windows`` instead:
the groups changed since the last fold are written (or deleted) one row each and the
change rows are deleted, so a restart reads at most that many change rows.

Both writes run inside the pipeline's transaction (the one holding the alerts and the
source checkpoint), so after ``kill -9`` the stored windows are exactly those of the
last committed batch: the lines read again after the checkpoint count once, and a
crossing already queued has the same alert id (``INSERT OR IGNORE``).
:meth:`WindowStore.reload` puts the stored groups back into the
:class:`~alert_service.match.aggregate.Aggregator` (the folded groups, then every
change row in ``seq`` order) at start and after a rolled-back transaction. Rows of
rules no longer configured are deleted at start; their changes are skipped.

Change row format (JSON)::

    [rows, changed, removed]
    rows:    [{column: value}]        -- sample rows, each once per batch
    changed: [[rule, [group values], start, last, count, [values], [[row key]],
               [[start time, [row key]]], [index into rows], fired, base]]
    removed: [[rule, [group values]]]

``base`` is null when the entry holds the group whole. ``[v, r, s]`` means the
values, row keys and sample rows listed are those added since the group's previous
change, which had ``v`` values, ``r`` row keys and ``s`` sample rows (within a window
they only grow, in the order they were counted, until the group alerts and drops its
values and row keys; ``s`` -1: the sample is listed whole, as for a beacon, whose
sample keeps the last rows): a group counting a long window is then not written
whole again by every batch that adds one value. The group must be held, with those
``v`` values, ``r`` row keys and ``s`` sample rows, when the entry is replayed;
entries written without ``base`` (ten items) are whole.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, Final

import orjson

from alert_service.logs import log_event
from alert_service.match.aggregate import Aggregator
from alert_service.match.groups import Group, group_key
from alert_service.parse.event import ColumnValue
from alert_service.state.db import StateConnection

__all__ = [
    "COMPACT_AFTER",
    "FOLD_GROUPS",
    "WindowStore",
    "decode_changes",
    "encode_changes",
    "mark_stored",
]

_log = logging.getLogger(__name__)

COMPACT_AFTER: Final = 16
"""Change rows (batches) after which they are folded into ``aggregate_windows``."""

FOLD_GROUPS: Final = 100_000
"""Groups changed since the last fold after which the next batch folds (bounds the
memory of the list of them, and the work of one fold)."""

_TABLES = (
    """
CREATE TABLE IF NOT EXISTS aggregate_windows (
    rule TEXT NOT NULL,
    group_key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (rule, group_key)
)
""",
    """
CREATE TABLE IF NOT EXISTS aggregate_window_changes (
    seq BIGINT NOT NULL PRIMARY KEY,
    changes TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
""",
)

_Key = tuple[ColumnValue, ...]
_Changed = list[tuple[str, _Key, Group]]
_Removed = list[tuple[str, _Key]]

_stdlib_encode = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
"""The fallback: ASCII JSON, so a lone surrogate is written as a ``\\udcXX`` escape
(text that is not UTF-8 cannot be stored)."""


def encode_changes(changed: _Changed, removed: _Removed) -> str:
    """One batch's changes as the JSON text of a change row (format: module doc).

    Encoded by orjson in one call; a value orjson refuses (an integer beyond 64
    bits, text with a lone surrogate) falls back to the standard library's encoder
    (ASCII JSON). A group whose :attr:`Group.stored` is set, with no fewer values
    and row keys than then, is written as the change since (``base``); the caller
    sets :attr:`Group.stored` once the row is written (:func:`mark_stored`).
    """
    rows: list[Mapping[str, ColumnValue]] = []
    index: dict[int, int] = {}  # id(sample row) → its place in rows
    entries: list[list[Any]] = []
    for rule, key, group in changed:
        values, counted, sample, stored = group.values, group.rows, group.sample, group.stored
        if (
            stored is not None
            and len(values) >= stored[0]
            and len(counted) >= stored[1]
            and len(sample) >= stored[2]
        ):
            base: list[int] | None = [stored[0], stored[1], stored[2]]
            value_list = list(islice(values, stored[0], None))
            row_list = list(islice(counted, stored[1], None))
            if stored[2] >= 0:
                sample = sample[stored[2] :]
        else:
            base, value_list, row_list = None, list(values), list(counted)
        refs: list[int] = []
        for row in sample:
            at = index.get(id(row))
            if at is None:
                at = index[id(row)] = len(rows)
                rows.append(row if row.__class__ is dict else dict(row))
            refs.append(at)
        entries.append([
            rule, key, group.start, group.last, group.count, value_list,
            row_list, group.times, refs, group.fired, base,
        ])  # fmt: skip
    doc = [rows, entries, removed]
    try:
        return orjson.dumps(doc).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _stdlib_encode(doc)


def mark_stored(changed: _Changed) -> None:
    """Record in each group what the state database now holds of it (:attr:`Group.stored`;
    a beacon's sample, which keeps the last rows, is written whole: -1)."""
    for _, _, group in changed:
        sample = -1 if group.times else len(group.sample)
        group.stored = (len(group.values), len(group.rows), sample)


def decode_changes(
    text: str, held: Callable[[str, _Key], Group | None] | None = None
) -> tuple[list[tuple[str, _Key, Group]], list[tuple[str, _Key]]]:
    """The ``(changed, removed)`` of a change row (inverse of :func:`encode_changes`).

    Args:
        held: the group held now for ``(rule, group values)``, which an entry
            written as a change (``base``) is applied to; None: such an entry is an
            error.

    Raises:
        ValueError, KeyError, TypeError, IndexError: the text is not a change row, or
            a change has no held group with the values and row keys it follows.
    """
    try:
        rows, entries, removed = orjson.loads(text)
    except orjson.JSONDecodeError:  # the fallback's escapes (a lone surrogate)
        rows, entries, removed = json.loads(text)
    changed: list[tuple[str, _Key, Group]] = []
    for entry in entries:
        rule, key, start, last, count, values, counted, times, refs, fired = entry[:10]
        base = entry[10] if len(entry) > 10 else None
        rule, key = str(rule), tuple(key)
        new_values = dict.fromkeys(values)
        new_rows = dict.fromkeys(tuple(r) for r in counted)
        sample = [rows[i] for i in refs]
        if base is not None:
            prior = held(rule, key) if held is not None else None
            if (
                prior is None
                or len(prior.values) != base[0]
                or len(prior.rows) != base[1]
                or (base[2] >= 0 and len(prior.sample) != base[2])
            ):
                raise ValueError(f"a change of group {key!r} of {rule!r} follows no held group")
            new_values = {**prior.values, **new_values}
            new_rows = {**prior.rows, **new_rows}
            if base[2] >= 0:
                sample = [*prior.sample, *sample]
        group = Group(
            int(start),
            int(last),
            count=int(count),
            values=new_values,
            rows=new_rows,
            times=[list(t) for t in times],
            sample=sample,
            fired=int(fired),
        )
        changed.append((rule, key, group))
    return changed, [(str(rule), tuple(key)) for rule, key in removed]


class WindowStore:
    """Persist an :class:`Aggregator`'s groups in ``aggregate_windows`` and
    ``aggregate_window_changes``.

    Args:
        conn: the state database (autocommit connection of :func:`open_state`).
        aggregator: the groups to keep.
        compact_after: change rows after which they are folded (:data:`COMPACT_AFTER`).

    Raises:
        sqlite3.Error: the tables cannot be created or read.
    """

    def __init__(
        self, conn: StateConnection, aggregator: Aggregator, compact_after: int = COMPACT_AFTER
    ) -> None:
        self.conn = conn
        self.aggregator = aggregator
        self.compact_after = compact_after
        self._seq = 0  # the last change row's seq
        self._rows = 0  # change rows since the last fold
        self._unfolded: dict[tuple[str, _Key], None] = {}  # groups changed since then
        self._folded: set[tuple[str, _Key]] = set()  # groups in aggregate_windows
        for table in _TABLES:
            conn.execute(table)
        names = aggregator.rule_names
        marks = ",".join("?" * len(names))
        conn.execute(f"DELETE FROM aggregate_windows WHERE rule NOT IN ({marks})", names)
        self.reload()

    def reload(self) -> int:
        """Replace the in-memory groups with the stored ones; return how many loaded."""
        aggregator = self.aggregator
        aggregator.clear()
        loaded = 0
        rows = self.conn.execute(
            "SELECT rule, group_key, state FROM aggregate_windows"
            " ORDER BY updated_at, rule, group_key"  # columns every backend has
        ).fetchall()
        for rule, key, text in rows:
            try:
                group = Group.from_doc(json.loads(text))
            except (ValueError, KeyError, TypeError) as err:
                log_event(_log, logging.WARNING, "aggregate_window_unreadable", rule=rule,
                          reason=f"{type(err).__name__}: {err}")  # fmt: skip
                continue
            aggregator.load(rule, key, group)
            loaded += 1
        self._folded = set()
        for rule, key, _ in rows:
            try:
                self._folded.add((rule, tuple(json.loads(key))))
            except (ValueError, TypeError):
                continue  # a key not written by group_key(): never deleted by a fold
        self._seq = self._rows = 0
        self._unfolded = {}
        changes = self.conn.execute(
            "SELECT seq, changes FROM aggregate_window_changes ORDER BY seq"
        ).fetchall()
        for seq, text in changes:
            self._seq = max(self._seq, int(seq))
            self._rows += 1
            try:
                changed, removed = decode_changes(text, self.aggregator.held)
            except (ValueError, KeyError, TypeError, IndexError) as err:
                log_event(_log, logging.WARNING, "aggregate_window_unreadable", seq=seq,
                          reason=f"{type(err).__name__}: {err}")  # fmt: skip
                continue
            self._replay(changed, removed)
            loaded += len(changed)
        return loaded

    def _replay(self, changed: _Changed, removed: _Removed) -> None:
        put = self.aggregator.put
        unfolded = self._unfolded
        for rule, key in removed:
            put(rule, key, None)
            unfolded[(rule, key)] = None
        for rule, key, group in changed:
            put(rule, key, group)
            unfolded[(rule, key)] = None

    def save(self, now: float) -> None:
        """Write the batch's changes (caller's transaction): one change row, or the fold.

        Args:
            now: wall time, seconds since the Unix epoch (``updated_at``).
        """
        changed, removed = self.aggregator.take_changed_keys()
        if not changed and not removed:
            return
        unfolded = self._unfolded
        for rule, key in removed:
            unfolded[(rule, key)] = None
        for rule, key, _ in changed:
            unfolded[(rule, key)] = None
        if self._rows + 1 >= self.compact_after or len(unfolded) >= FOLD_GROUPS:
            self._fold(now)
        else:
            self._seq += 1
            self._rows += 1
            self.conn.execute(
                "INSERT INTO aggregate_window_changes (seq, changes, updated_at)"
                " VALUES (?, ?, ?)",
                (self._seq, encode_changes(changed, removed), now),
            )
        # Kept also if the transaction rolls back: the pipeline then reloads every
        # group from the database (reload()), as new objects without a mark.
        mark_stored(changed)

    def _fold(self, now: float) -> None:
        """Write every group changed since the last fold as its own row (delete the
        dropped ones that had a row); drop the change rows."""
        conn = self.conn
        group_of = self.aggregator.held
        folded = self._folded
        upsert: list[tuple[str, str, str, float]] = []
        delete: list[tuple[str, str]] = []
        encoded: dict[int, str] = {}  # a row shared by several groups: encoded once
        for item in self._unfolded:
            rule, key = item
            group = group_of(rule, key)
            if group is not None:
                upsert.append((rule, group_key(key), group.to_text(encoded), now))
                folded.add(item)
            elif item in folded:
                delete.append((rule, group_key(key)))
                folded.discard(item)
        if delete:
            conn.executemany(
                "DELETE FROM aggregate_windows WHERE rule = ? AND group_key = ?", delete
            )
        if upsert:
            conn.executemany(
                "INSERT INTO aggregate_windows (rule, group_key, state, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (rule, group_key) DO UPDATE SET"
                " state = excluded.state, updated_at = excluded.updated_at",
                upsert,
            )
        conn.execute("DELETE FROM aggregate_window_changes")
        self._rows = 0
        self._unfolded = {}

