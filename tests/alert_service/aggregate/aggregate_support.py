"""Result-log lines and configurations for the aggregation-rule tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alert_service.config import Config, build_config
from alert_service.parse.event import Event
from tests.alert_service.deliver_support import make_event

QUERY = "pack_tracked_connections_tracked_connections"


def row(**columns: Any) -> dict[str, Any]:
    """A scan attempt row: nmap-like process 4242 on web-01 to 10.0.0.9, refused."""
    base: dict[str, Any] = {
        "pid": 4242,
        "start_time": 1700000000,
        "name": "scanner",
        "protocol": 6,
        "family": 2,
        "local_address": "10.0.0.5",
        "local_port": 50000,
        "remote_address": "10.0.0.9",
        "remote_port": 22,
        "direction": "outbound",
        "status": "refused",
    }
    base.update(columns)
    return base


def event(
    t: int, *, counter: int = 1, host: str = "web-01", action: str = "added", **columns: Any
) -> Event:
    """:func:`row` as an event (``added`` unless ``action`` says) logged at unixTime ``t``."""
    return make_event(
        columns=row(**columns), unix_time=t, counter=counter, host=host, action=action
    )


def line(t: int, *, counter: int = 1, host: str = "web-01", action: str = "added",
         **columns: Any) -> str:  # fmt: skip
    """:func:`row` as one osquery result-log line (event format, every value as text)."""
    cols = {k: str(v) for k, v in row(**columns).items()}
    doc = {
        "name": QUERY,
        "hostIdentifier": host,
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": t,
        "epoch": 0,
        "counter": counter,
        "numerics": False,
        "columns": cols,
        "action": action,
    }
    return json.dumps(doc, separators=(",", ":"))


def scan_rule(**aggregate: Any) -> dict[str, Any]:
    """A distinct-port scan rule (threshold 3 in 10 s) with ``aggregate`` overrides."""
    spec: dict[str, Any] = {
        "type": "value_count",
        "field": "remote_port",
        "group_by": ["host", "pid", "start_time", "remote_address"],
        "threshold": 3,
        "window_secs": 10,
    }
    spec.update(aggregate)
    spec = {k: v for k, v in spec.items() if v is not None}  # None: leave the key out
    return {"name": "port-scan", "notify": ["hook"], "direction": ["outbound"], "aggregate": spec}


def config(tmp: Path, *rules: dict[str, Any], log: Path | None = None) -> Config:
    """A configuration with one webhook and ``rules`` (state under ``tmp``)."""
    doc: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "sources": [{"path": str(log or tmp / "results.log"), "start_at": "beginning"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": list(rules),
    }
    return build_config(doc, "test.yaml")
