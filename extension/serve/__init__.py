"""Serve stage: the table plugins and the Thrift server osqueryd talks to."""

from __future__ import annotations

from extension.serve.server import ExtensionServer, ServeError
from extension.serve.table import (
    STATS_TABLE_NAME,
    TABLE_NAME,
    StatsTable,
    Table,
    TrackedConnectionsTable,
)

__all__ = [
    "STATS_TABLE_NAME",
    "TABLE_NAME",
    "ExtensionServer",
    "ServeError",
    "StatsTable",
    "Table",
    "TrackedConnectionsTable",
]
