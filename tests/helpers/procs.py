"""Child processes that open real sockets for the tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

# A child that connects to 127.0.0.1:<port>, writes its local port to stdout,
# then holds the connection until stdin closes, and exits.
CONNECT_AND_HOLD = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def spawn_connector(port: int, *extra_argv: str | bytes) -> tuple[subprocess.Popen[bytes], int]:
    """Start a child connected to 127.0.0.1:port; returns it and its local port."""
    argv: list[str | bytes] = [sys.executable, "-c", CONNECT_AND_HOLD, str(port), *extra_argv]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None
    line = child.stdout.readline()
    return child, int(line)


def finish(child: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin so it exits, and reap it."""
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=10)
    if child.stdout is not None:
        child.stdout.close()


def wait_for(predicate: object, timeout_secs: float = 10.0, interval_secs: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true; raise AssertionError on timeout."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_secs)
    raise AssertionError(f"condition not met within {timeout_secs} s")


def python_name() -> str:
    """The process name psutil reports for a child started with sys.executable."""
    return Path(sys.executable).resolve().name
