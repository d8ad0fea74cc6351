"""Helpers of the alert service tests: paths, the scripted HTTP server, the fake clock,
the rotation helper.

A uniquely named module (not ``conftest``) so that test modules can import it
without clashing with other directories' conftest files.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import zstandard

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


HANG = -1
"""Script entry: keep the request open until ``endpoint.release`` is set."""


@dataclass
class Request:
    """One request the endpoint got (``status``: what it was answered)."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    method: str = "POST"

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Answer:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"

    @classmethod
    def json(cls, status: int, doc: Any, headers: dict[str, str] | None = None) -> Answer:
        """A JSON answer (``Content-Type: application/json``)."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        return cls(status, all_headers, json.dumps(doc).encode())


@dataclass
class ScriptedEndpoint:
    """The one scripted HTTP test server: a real ``ThreadingHTTPServer`` on 127.0.0.1.

    Each request (any method) is answered by ``respond(request)`` when set (a fake API
    routing on method and path), else from ``script`` in order, then ``default``; an
    answer of status :data:`HANG` holds the request until ``release`` is set.
    ``delay_secs`` waits before answering (timeouts). Every request is recorded in
    ``requests``.
    """

    url: str = ""
    base_url: str = ""
    script: list[Answer] = field(default_factory=list)
    default: Answer = field(default_factory=Answer)
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay_secs: float = 0.0
    respond: Callable[[Request], Answer] | None = None

    def answer(self, *answers: Answer | int) -> None:
        """Queue answers (a bare int is that status with body ``ok``)."""
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
        """Wait until ``count`` requests (2xx ones when ``accepted``) arrived; how many did."""
        deadline = time.monotonic() + timeout_secs
        while True:
            with self.lock:
                n = len([r for r in self.requests if not accepted or 200 <= r.status < 300])
            if n >= count or time.monotonic() >= deadline:
                return n
            time.sleep(0.01)


@contextmanager
def serve_endpoint(
    path: str = "/hook", respond: Callable[[Request], Answer] | None = None
) -> Iterator[ScriptedEndpoint]:
    """Run a :class:`ScriptedEndpoint` on 127.0.0.1 (port 0) until the block ends.

    Args:
        path: appended to ``base_url`` to make ``url``.
        respond: see :class:`ScriptedEndpoint`.
    """
    state = ScriptedEndpoint(respond=respond)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Replies go out at once: with keep-alive, Nagle and the client's delayed ACK
        # would hold each small reply about 40 ms.
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length) if length else b""
            if state.delay_secs:
                time.sleep(state.delay_secs)
            request = Request(self.path, dict(self.headers.items()), body, 0, self.command)
            if state.respond is not None:
                answer = state.respond(request)
            else:
                with state.lock:
                    answer = state.script.pop(0) if state.script else state.default
            if answer.status == HANG:
                state.release.wait(30)
                with state.lock:
                    state.requests.append(replace(request, status=HANG))
                self.close_connection = True
                return
            with state.lock:
                state.requests.append(replace(request, status=answer.status))
            try:
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    state.url = state.base_url + path
    try:
        yield state
    finally:
        state.release.set()
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
