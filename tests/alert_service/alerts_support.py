"""Helpers of the alert service tests: paths and a real HTTP webhook receiver.

A uniquely named module (not ``conftest``) so that test modules can import it
without clashing with other directories' conftest files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zstandard

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 answering from a script of statuses.

    ``script`` holds ``(status, headers)`` answers used in order; once empty, every
    request gets 200.
    """

    url: str = ""
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    delay_secs: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout_secs: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.02)
        with self.lock:
            return list(self.requests)


@contextmanager
def serve_receiver() -> Iterator[Receiver]:
    """Run a :class:`Receiver` on 127.0.0.1 (port 0) in a thread until the block ends."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if state.delay_secs:
                time.sleep(state.delay_secs)
            with state.lock:
                state.requests.append(Received(self.path, dict(self.headers.items()), body))
                status, headers = state.script.pop(0) if state.script else (200, {})
            reply = b"ok" if status < 300 else b"nope"
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class FakeClock:
    """The one manual clock of these tests: nothing moves until told.

    ``now`` is wall time (seconds since the Unix epoch), ``mono`` a monotonic reading;
    :meth:`advance` and :meth:`wait` move both. Call it (``clock()``) for ``now``; pass
    ``clock.monotonic`` where a monotonic clock is wanted.
    """

    def __init__(self, now: float = 1_756_796_709.0, mono: float = 1000.0) -> None:
        self.now = now
        self.mono = mono
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def wait(self, event: threading.Event, secs: float) -> bool:
        """Advance by ``secs`` instead of sleeping; True when ``event`` is set."""
        self.waits.append(secs)
        self.advance(max(0.0, secs))
        return event.is_set()

    def advance(self, secs: float) -> None:
        self.now += secs
        self.mono += secs


def osquery_rotate(log: Path) -> None:
    """The one rotation helper: what osqueryd's ``--logger_rotate`` does to ``log``.

    Shift ``.N.zst`` up, compress ``.1`` to ``.2.zst`` (written aside, then renamed in,
    as a file appears to a reader), rename the log to ``.1`` (osquery 5.23
    plugins/logger/logrotate.h).
    """
    n = 2
    while Path(f"{log}.{n}.zst").exists():
        n += 1
    for k in range(n - 1, 1, -1):
        os.rename(f"{log}.{k}.zst", f"{log}.{k + 1}.zst")
    first = Path(f"{log}.1")
    if first.exists():
        tmp = Path(f"{log}.2.zst.tmp")
        tmp.write_bytes(zstandard.ZstdCompressor().compress(first.read_bytes()))
        os.rename(tmp, f"{log}.2.zst")
        first.unlink()
    if log.exists():
        os.rename(log, first)
