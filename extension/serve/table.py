"""The tables this extension serves: ``tracked_connections`` and its health table.

Row format on the wire: list of rows, each ``dict[str, str]`` keyed by column
name. An unknown value is left out of the row, which osqueryd reads as NULL
(osquery 5.23 osquery/sql/dynamic_table_row.cpp). Routes follow osquery/core/tables.cpp
routeInfo: one ``{"id": "column", "name", "type", "op"}`` map per column.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from extension.collect.dns_capture import DnsStats
from extension.columns import CHANGING_COLUMNS, COLUMNS
from extension.enrich.connections import Row
from extension.sampler import Sampler
from extension.serve.reply import EncodedRows

__all__ = [
    "STATS_COLUMNS",
    "STATS_TABLE_NAME",
    "TABLE_NAME",
    "StatsTable",
    "Table",
    "TrackedConnectionsTable",
    "column_routes",
]

TABLE_NAME = "tracked_connections"
STATS_TABLE_NAME = "tracked_connections_stats"

STATS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("samples_taken", "BIGINT"),
    ("sample_errors", "BIGINT"),
    ("sample_interval_ms", "INTEGER"),
    ("last_sample_ms", "DOUBLE"),
    ("max_sample_ms", "DOUBLE"),
    ("last_sample_time", "BIGINT"),
    ("connections_tracked", "BIGINT"),
    ("connections_lingering", "BIGINT"),
    ("connections_evicted", "BIGINT"),
    ("processes_cached", "BIGINT"),
    ("processes_exited", "BIGINT"),
    ("processes_skipped", "BIGINT"),
    ("processes_skipped_reasons", "TEXT"),
    ("access_denied_pids", "BIGINT"),
    ("last_error", "TEXT"),
    ("source", "TEXT"),
    ("events_off_reason", "TEXT"),
    ("events_read", "BIGINT"),
    ("events_lost", "BIGINT"),
    ("event_flows", "BIGINT"),
    ("events_evicted", "BIGINT"),
    ("tasks_tracked", "BIGINT"),
    ("state_file", "TEXT"),
    ("state_error", "TEXT"),
    ("rows_revived", "BIGINT"),
    ("dns", "TEXT"),
    ("dns_off_reason", "TEXT"),
    ("dns_namespaces", "BIGINT"),
    ("dns_packets_read", "BIGINT"),
    ("dns_packets_dropped", "BIGINT"),
    ("dns_answers_parsed", "BIGINT"),
    ("dns_messages_skipped", "BIGINT"),
    ("dns_cache_size", "BIGINT"),
)


def column_routes(columns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """Route list for (name, osquery type) pairs, op "0" (DEFAULT) for each."""
    return [{"id": "column", "name": name, "type": kind, "op": "0"} for name, kind in columns]


class Table(Protocol):
    """A table plugin as the Thrift handler sees it."""

    name: str

    def routes(self) -> list[dict[str, str]]:
        """The column routes for ``{"action": "columns"}``."""
        ...

    def generate(self, context: dict[str, Any]) -> Sequence[Row]:
        """Rows for ``{"action": "generate"}``; raises to report an error status."""
        ...


class TrackedConnectionsTable:
    """``tracked_connections``: the sampler's connection table.

    Constraints in ``context`` are ignored: SQLite re-applies the WHERE clause
    (osquery 5.23 osquery/sql/virtual_table.cpp ``xFilter``/``xBestIndex``).
    """

    name = TABLE_NAME

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def routes(self) -> list[dict[str, str]]:
        """One route per contract column (extension/columns.py), in order."""
        return column_routes([(c.name, c.type) for c in COLUMNS])

    def generate(self, context: dict[str, Any]) -> EncodedRows:
        """The rows, encoded (a sequence of dicts to other readers).

        A query that reads no column that changes (:func:`reads_stable_only`:
        the pack's) gets each row's stable columns alone, which are kept
        encoded and sent as they are; any other query gets every column.

        Raises:
            extension.collect.CollectError: no fresh sample can be had.
        """
        pieces, count = self._sampler.encoded_rows(stable_only=reads_stable_only(context))
        return EncodedRows(pieces, count)


def reads_stable_only(context: dict[str, Any]) -> bool:
    """Whether the query of a ``generate`` request reads no column that changes.

    osqueryd puts the columns a query reads, anywhere in it (select list,
    WHERE, ORDER BY, joins), in the request's context as ``colsUsed``, a list
    of names (osquery 5.x osquery/core/tables.cpp
    ``TablePlugin::setRequestFromContext``, from SQLite's ``colUsed`` in
    osquery/sql/virtual_table.cpp ``xBestIndex``). SQLite asks the table only
    for those columns (``xColumn``), so a row may leave the others out.
    Without a well-formed ``colsUsed`` (an older osquery, another caller) the
    query may read any column: False.
    """
    used = context.get("colsUsed")
    if not isinstance(used, list) or not all(isinstance(name, str) for name in used):
        return False
    return CHANGING_COLUMNS.isdisjoint(used)


class StatsTable:
    """``tracked_connections_stats``: one row with the sampler's health."""

    name = STATS_TABLE_NAME

    def __init__(self, sampler: Sampler) -> None:
        self._sampler = sampler

    def routes(self) -> list[dict[str, str]]:
        """Routes for STATS_COLUMNS."""
        return column_routes(STATS_COLUMNS)

    def generate(self, context: dict[str, Any]) -> list[Row]:
        """One row; durations in milliseconds, times in Unix seconds.

        ``source`` is 'events+sampling' while kernel events run, else
        'sampling', and then ``events_off_reason`` says why.
        """
        s = self._sampler.stats()
        dns = s.dns or DnsStats("off", "not configured")
        return [
            {
                "samples_taken": str(s.samples_taken),
                "sample_errors": str(s.sample_errors),
                "sample_interval_ms": str(round(self._sampler.interval_secs * 1000)),
                "last_sample_ms": f"{s.last_sample_ms:.3f}",
                "max_sample_ms": f"{s.max_sample_ms:.3f}",
                "last_sample_time": str(int(s.last_sample_time)),
                "connections_tracked": str(s.connections_tracked),
                "connections_lingering": str(s.connections_lingering),
                "connections_evicted": str(s.connections_evicted),
                "processes_cached": str(s.processes_cached),
                "processes_exited": str(s.processes_exited),
                "processes_skipped": str(sum(s.processes_skipped.values())),
                "processes_skipped_reasons": json.dumps(s.processes_skipped, sort_keys=True),
                "access_denied_pids": str(s.access_denied_pids),
                "last_error": s.last_error,
                "source": s.source,
                "events_off_reason": s.events_reason,
                "events_read": str(s.events.events_read if s.events else 0),
                "events_lost": str(s.events.events_lost if s.events else 0),
                "event_flows": str(s.events.flows if s.events else 0),
                "events_evicted": str(s.events.evicted if s.events else 0),
                "tasks_tracked": str(s.events.tasks if s.events else 0),
                "state_file": s.state_file,
                "state_error": s.state_error,
                "rows_revived": str(s.rows_revived),
                "dns": dns.state,
                "dns_off_reason": dns.reason,
                "dns_namespaces": str(dns.namespaces),
                "dns_packets_read": str(dns.packets_read),
                "dns_packets_dropped": str(dns.packets_dropped),
                "dns_answers_parsed": str(dns.answers_parsed),
                "dns_messages_skipped": str(dns.messages_skipped),
                "dns_cache_size": str(dns.cache_size),
            }
        ]
