"""Differential results and counters, as osqueryd computes them.

Part of the osqueryd stand-in (a test double, not osquery).
(Upstream osquery 5.23
osquery/core/query.cpp Query::addNewResults, osquery/core/sql/diff_results.cpp
diff, osquery/dispatcher/scheduler.cpp launchQuery.)

* Results are compared as multisets of whole typed rows. "added" keeps the
  order of the current results; "removed" comes out sorted the way
  std::multiset<RowTyped> iterates (keys bytewise, then int < double < string
  variants, then value).
* The first run of a name, or the first after an epoch change, reports every
  row as added with counter 0. Later the counter is the stored one + 1, and
  it is bumped (and the rows stored) only when something changed.
* State is kept in memory; with a ``database_path`` it is also saved to
  ``<database_path>/standin-state.json`` after each change, so a restart
  continues the counters. osqueryd keeps it in RocksDB instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osqueryd_standin.sqlengine import TypedRow
from osqueryd_standin.values import TypedValue

__all__ = ["STATE_FILENAME", "DiffResults", "DiffStore", "diff_rows", "row_sort_key"]

STATE_FILENAME = "standin-state.json"

_RowKey = tuple[tuple[bytes, int, Any], ...]


def _value_key(value: TypedValue) -> tuple[int, Any]:
    if isinstance(value, int):
        return (0, value)
    if isinstance(value, float):
        return (1, value)
    return (2, value.encode("utf-8", "surrogateescape"))


def row_sort_key(row: TypedRow) -> _RowKey:
    """Ordering and identity key of a row, matching std::map<string, variant> ``<``."""
    items = sorted((k.encode("utf-8", "surrogateescape"), k) for k in row)
    return tuple((kb, *_value_key(row[k])) for kb, k in items)


@dataclass
class DiffResults:
    """Rows added and removed since the previous run.

    Attributes:
        added: rows in the order of the current results.
        removed: rows in multiset order.
    """

    added: list[TypedRow] = field(default_factory=list)
    removed: list[TypedRow] = field(default_factory=list)

    def has_no_results(self) -> bool:
        """True when both lists are empty."""
        return not self.added and not self.removed


def diff_rows(previous: Sequence[TypedRow], current: Sequence[TypedRow]) -> DiffResults:
    """Multiset difference of whole rows (osquery/core/sql/diff_results.cpp diff).

    Args:
        previous: rows stored from the last run.
        current: rows of this run.

    Returns:
        The differential.
    """
    remaining: Counter[_RowKey] = Counter()
    by_key: dict[_RowKey, list[TypedRow]] = {}
    for row in previous:
        key = row_sort_key(row)
        remaining[key] += 1
        by_key.setdefault(key, []).append(row)
    result = DiffResults()
    for row in current:
        key = row_sort_key(row)
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            result.added.append(row)
    for key in sorted(k for k, n in remaining.items() if n > 0):
        result.removed.extend(by_key[key][: remaining[key]])
    return result


@dataclass
class _Entry:
    epoch: int
    counter: int
    rows: list[TypedRow]


class DiffStore:
    """Stored results, epochs and counters per query name.

    Args:
        database_path: directory for the JSON state file, or None for memory
            only (``--ephemeral``/``--disable_database``).
    """

    def __init__(self, database_path: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._file: Path | None = None
        if database_path is not None:
            directory = Path(database_path)
            directory.mkdir(parents=True, exist_ok=True)
            self._file = directory / STATE_FILENAME
            self._load()

    def _load(self) -> None:
        assert self._file is not None
        try:
            data = json.loads(self._file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        for name, raw in (data.get("queries") or {}).items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self._entries[str(name)] = _Entry(
                    int(raw["epoch"]), int(raw["counter"]), [dict(r) for r in raw["rows"]]
                )

    def _save(self) -> None:
        if self._file is None:
            return
        data = {
            "version": 1,
            "queries": {
                name: {"epoch": e.epoch, "counter": e.counter, "rows": e.rows}
                for name, e in self._entries.items()
            },
        }
        tmp = self._file.with_name(self._file.name + ".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self._file)

    def add_new_results(
        self, name: str, rows: Sequence[TypedRow], epoch: int
    ) -> tuple[DiffResults, int | None]:
        """Diff a run against the stored one and store it.

        Args:
            name: the scheduled query name (e.g. "pack_netmon_tracked").
            rows: this run's rows, already escaped.
            epoch: ``--schedule_epoch``.

        Returns:
            (differential, counter): counter is 0 on a first run (or new
            epoch), previous + 1 when something changed, and None when nothing
            changed (nothing is stored, the counter is not bumped).
        """
        with self._lock:
            entry = self._entries.get(name)
            current = [dict(r) for r in rows]
            if entry is None or entry.epoch != epoch:
                self._entries[name] = _Entry(epoch, 0, current)
                self._save()
                return DiffResults(added=list(current)), 0
            result = diff_rows(entry.rows, current)
            if result.has_no_results():
                return result, None
            entry.rows = current
            entry.counter += 1
            self._save()
            return result, entry.counter

    def counter(self, name: str) -> int | None:
        """The stored counter of a name, None when never run."""
        with self._lock:
            entry = self._entries.get(name)
            return None if entry is None else entry.counter
