"""Baseline runs without a flood: osquery's ``counter`` 0 re-logs.

A differential query's first run — and the first run after an ``epoch`` change or a
lost/ephemeral osquery database — logs every current row as ``added`` with
``counter`` 0 (docs/design/osquery-interfaces.md §4, "Differential queries").
Alerting on all of them again would
flood every destination after each osquery reinstall.

:class:`BaselineTracker` keeps, per (``hostIdentifier``, query ``name``), the set of
rows that matched a rule when logged as added and were not removed since (table
``active_rows``, persisted across restarts). In a counter-0 run:

* a row already in that set is **known**: not alerted again;
* a genuinely new row gets its rule's ``baseline`` mode: ``alert`` (default — an IOC
  match is never dropped silently), ``digest`` (one message per host, query, run and
  rule listing the new rows: a :class:`DigestAlert`), or ``none`` (counted in
  ``baseline_rows_suppressed`` and logged, not alerted).

The set follows the log: ``added`` (counter > 0) inserts a matching row, ``removed``
deletes it. Only rows that match some rule as ``added`` are kept, so the table stays
small (a row that matches nothing would not alert in a baseline run either). Rows not
re-logged by a baseline run are gone from the host: they are pruned when the run ends,
i.e. at the next event of the same (host, query) from another run.

Every change is made on the caller's connection inside the caller's transaction, the
one that also writes the alerts and the source checkpoint, so a crash keeps the set
consistent with the log position. Snapshot rows are not differential and pass through.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from alert_service.logs import log_event
from alert_service.match import BASELINE_MODES, DEFAULT_BASELINE_MODE, Alert, BaselineMode
from alert_service.parse.event import Event
from alert_service.state.db import StateConnection
from alert_service.stats import Stats

__all__ = [
    "BASELINE_MODES",
    "DEFAULT_BASELINE_MODE",
    "BaselineMode",
    "BaselineTracker",
    "DigestAlert",
    "row_hash",
]


_log = logging.getLogger(__name__)


def row_hash(event: Event) -> str:
    """Return the hash of ``event``'s typed row: 32 hex digits of SHA-256.

    Independent of host, query, time, ``epoch`` and ``counter`` (those are keys or
    change between runs) and of the log form (event/batch, numerics on or off), since
    the columns are typed by the parse stage.
    """
    blob = json.dumps(
        sorted(event.columns.items()), ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class DigestAlert(Alert):
    """One alert standing for several new rows of one baseline run.

    ``event`` is the first row's event (host, query, time and decorations are the same
    for every row); ``rows`` holds all of them, the first included.

    Attributes:
        rows: the new rows' events, in log order.
    """

    rows: tuple[Event, ...] = ()
    member_ids: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return :meth:`Alert.as_dict` of the first row plus the digest members.

        Extra keys: ``"kind": "baseline_digest"``, ``"row_count": int``, ``"rows":
        [{column: value}, ...]``, ``"alert_ids": [str, ...]`` (the ids the rows have as
        single alerts, in the same order).
        """
        doc = Alert.as_dict(self)
        doc["kind"] = "baseline_digest"
        doc["row_count"] = len(self.rows)
        doc["rows"] = [dict(row.columns) for row in self.rows]
        doc["alert_ids"] = list(self.member_ids)
        return doc


@dataclass(slots=True)
class _Run:
    epoch: int
    unix_time: int
    open: bool


_DigestKey = tuple[str, str, int, int, str]


class BaselineTracker:
    """Apply the baseline rules to matched events (see the module docs).

    Args:
        conn: the state database; every method runs on it inside the caller's open
            transaction.
        modes: rule name → :data:`BaselineMode` (rules not listed: ``alert``).
        matches_as_added: tells whether an event's row would match some rule as an
            ``added`` event (used for ``removed`` rows, to find rows that are tracked).
        stats: counters (``baseline_*``).
        exclusive: this tracker is the only writer of the database's baseline runs
            (``replay``'s private database), so it can count the open ones
            (:attr:`open_runs`).

    Not thread-safe; after a rolled-back transaction call :meth:`forget`.
    """

    def __init__(
        self,
        conn: StateConnection,
        modes: Mapping[str, BaselineMode],
        matches_as_added: Callable[[Event], bool],
        stats: Stats,
        *,
        exclusive: bool = False,
    ) -> None:
        self.conn = conn
        self.modes = dict(modes)
        self.stats = stats
        self._matches_as_added = matches_as_added
        self._runs: dict[tuple[str, str], _Run | None] = {}
        self._digests: dict[_DigestKey, list[Alert]] = {}
        self._exclusive = exclusive
        self.open_runs = self._count_open_runs()
        """How many baseline runs are open, when ``exclusive``; else always 1 (not
        known: another writer may have opened one). While it is 0, :meth:`unmatched`
        of a line with ``counter`` > 0 changes nothing, and the caller may leave it
        out (tests/alert_service/match/test_match_pass_over.py)."""

    def _count_open_runs(self) -> int:
        if not self._exclusive:
            return 1
        row = self.conn.execute("SELECT COUNT(*) FROM baseline_runs WHERE open = 1").fetchone()
        return int(row[0]) if row is not None else 0

    def apply(self, event: Event, alerts: list[Alert]) -> list[Alert]:
        """Update the active set with ``event`` and return the alerts to enqueue.

        Args:
            event: one parsed event.
            alerts: what the rules made of it (possibly empty).

        Returns:
            ``alerts`` unchanged outside baseline runs; in a baseline run, none for a
            known row, and for a new row the alerts of rules whose mode is ``alert``
            (``digest`` ones are held for :meth:`take_digests`).
        """
        action = event.action
        if action == "snapshot":
            return alerts
        key = (event.host_identifier, event.name)
        if event.counter == 0 and action == "added":
            return self._baseline_row(key, event, alerts)
        self._leave_run(key)
        if action == "added":
            if alerts:
                self._upsert(key, event)
        elif self._matches_as_added(event):
            self.conn.execute(
                "DELETE FROM active_rows WHERE host = ? AND query = ? AND row_hash = ?",
                (key[0], key[1], row_hash(event)),
            )
        return alerts

    def unmatched(  # noqa: PLR0917 - the event's fields
        self, host: str, name: str, action: str, counter: int, epoch: int, unix_time: int
    ) -> None:
        """:meth:`apply` of an event that matched no rule (and, ``removed``, would not
        have matched as ``added``), from its fields alone: the run bookkeeping only.

        Equal to ``apply(event, [])`` for such an event
        (tests/alert_service/match/test_match_pass_over.py).
        """
        if action == "snapshot":
            return
        key = (host, name)
        if counter == 0 and action == "added":
            self._enter_run(key, epoch, unix_time)
            return
        run = self._runs.get(key, _MISSING)
        if run is None or (run is not _MISSING and not run.open):
            return  # the common line: no open run to end, known without a call
        self._leave_run(key)

    def take_digests(self) -> list[Alert]:
        """Return one :class:`DigestAlert` per (host, query, run, rule) held so far.

        Call before committing the batch that produced them. The id hashes the host,
        query, epoch, run time, rule and the member alerts' ids, so reading the same
        lines again yields the same id (the outbox ignores it).
        """
        out: list[Alert] = []
        for (host, name, epoch, unix_time, rule), members in self._digests.items():
            ids = sorted(a.id for a in members)
            blob = json.dumps(
                ["baseline-digest", host, name, epoch, unix_time, rule, ids],
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode("utf-8", "surrogatepass")
            digest_id = hashlib.sha256(blob).hexdigest()[:32]
            first = members[0]
            out.append(
                DigestAlert(
                    digest_id,
                    rule,
                    first.notify,
                    first.event,
                    tuple(a.event for a in members),
                    tuple(a.id for a in members),
                    severity=first.severity,
                )
            )
            self.stats.baseline_digests += 1
            log_event(
                _log,
                logging.INFO,
                "baseline_digest",
                host=host,
                query=name,
                rule=rule,
                rows=len(members),
                alert_id=digest_id,
            )
        self._digests.clear()
        return out

    def forget(self) -> None:
        """Drop cached state and held digests (after a rollback)."""
        self._runs.clear()
        self._digests.clear()
        self.open_runs = self._count_open_runs()

    # -- internals -------------------------------------------------------------

    def _baseline_row(self, key: tuple[str, str], event: Event, alerts: list[Alert]) -> list[Alert]:
        self._enter_run(key, event.epoch, event.unix_time)
        if not alerts:
            return alerts
        digest = row_hash(event)
        known = self.conn.execute(
            "SELECT 1 FROM active_rows WHERE host = ? AND query = ? AND row_hash = ?",
            (key[0], key[1], digest),
        ).fetchone()
        self._upsert(key, event, digest)
        if known is not None:
            self.stats.baseline_rows_known += 1
            return []
        self.stats.baseline_rows_new += 1
        out: list[Alert] = []
        for alert in alerts:
            mode = self.modes.get(alert.rule, DEFAULT_BASELINE_MODE)
            if mode == "alert":
                out.append(alert)
            elif mode == "digest":
                dkey = (key[0], key[1], event.epoch, event.unix_time, alert.rule)
                self._digests.setdefault(dkey, []).append(alert)
            else:
                self.stats.baseline_rows_suppressed += 1
                log_event(
                    _log,
                    logging.INFO,
                    "baseline_row_suppressed",
                    host=key[0],
                    query=key[1],
                    rule=alert.rule,
                    alert_id=alert.id,
                )
        return out

    def _upsert(self, key: tuple[str, str], event: Event, digest: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO active_rows (host, query, row_hash, seen_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (host, query, row_hash) DO UPDATE SET seen_at = excluded.seen_at",
            (key[0], key[1], digest or row_hash(event), event.unix_time),
        )

    def _load_run(self, key: tuple[str, str]) -> _Run | None:
        row = self.conn.execute(
            "SELECT epoch, unix_time, open FROM baseline_runs WHERE host = ? AND query = ?", key
        ).fetchone()
        run = _Run(int(row[0]), int(row[1]), bool(row[2])) if row is not None else None
        self._runs[key] = run
        return run

    def _run_of(self, key: tuple[str, str]) -> _Run | None:
        """The run of (host, query): remembered, else read from the database."""
        run = self._runs.get(key, _MISSING)
        return self._load_run(key) if run is _MISSING else run

    def _leave_run(self, key: tuple[str, str]) -> None:
        """A line outside any counter-0 run: the open run of (host, query) has ended."""
        run = self._run_of(key)
        if run is not None and run.open:
            self._close_run(key, run)

    def _enter_run(self, key: tuple[str, str], epoch: int, unix_time: int) -> None:
        run = self._run_of(key)
        if run is not None and run.epoch == epoch and run.unix_time == unix_time:
            return
        if run is not None and run.open:
            self._close_run(key, run)
        self.conn.execute(
            "INSERT INTO baseline_runs (host, query, epoch, unix_time, open) VALUES (?, ?, ?, ?, 1)"
            " ON CONFLICT (host, query) DO UPDATE SET epoch = excluded.epoch,"
            " unix_time = excluded.unix_time, open = 1",
            (key[0], key[1], epoch, unix_time),
        )
        self._runs[key] = _Run(epoch, unix_time, True)
        if self._exclusive:
            self.open_runs += 1
        log_event(
            _log,
            logging.INFO,
            "baseline_run_started",
            host=key[0],
            query=key[1],
            epoch=epoch,
            unix_time=unix_time,
        )

    def _close_run(self, key: tuple[str, str], run: _Run) -> None:
        pruned = self.conn.execute(
            "DELETE FROM active_rows WHERE host = ? AND query = ? AND seen_at < ?",
            (key[0], key[1], run.unix_time),
        ).rowcount
        self.conn.execute("UPDATE baseline_runs SET open = 0 WHERE host = ? AND query = ?", key)
        run.open = False
        if self._exclusive:
            self.open_runs -= 1
        log_event(
            _log,
            logging.INFO,
            "baseline_run_ended",
            host=key[0],
            query=key[1],
            unix_time=run.unix_time,
            rows_pruned=pruned,
        )


_MISSING: Final[Any] = object()
