"""Serve stage: the table plugin and the Thrift server osqueryd talks to."""

from __future__ import annotations

from extension.serve.server import ExtensionServer, ServeError
from extension.serve.table import TABLE_NAME, TrackedConnectionsTable

__all__ = ["TABLE_NAME", "ExtensionServer", "ServeError", "TrackedConnectionsTable"]
