"""scripts/demo as a user runs it: real subprocesses, real sockets, a real temp folder.

The three ways it used to fail silently: an extension that does not register
in time, ``--c2-port`` moving the listener but not the rule, and a failed
start leaving its temp folder behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.osqueryd import ROOT
from tests.helpers.procs import wait_for

DEMO = ROOT / "scripts" / "demo.py"


@contextmanager
def demo(tmp: Path, *argv: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Run the demo with its temp folder under ``tmp``; collect stdout+stderr lines."""
    child = subprocess.Popen(
        [sys.executable, str(DEMO), "--standin", *argv],
        cwd=ROOT,
        env=dict(os.environ, TMPDIR=str(tmp), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert child.stdout is not None
    stream = child.stdout
    reader = threading.Thread(target=lambda: lines.extend(stream), daemon=True)
    reader.start()
    try:
        yield child, lines
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        reader.join(timeout=10)
        stream.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_extension_not_registered_is_loud_and_exits_nonzero(tmp_path: Path) -> None:
    never_registers = f"{sys.executable} -c 'import time; time.sleep(120)'"
    with demo(
        tmp_path,
        "--c2-port", str(_free_port()),
        "--register-timeout-secs", "6",
        "--extension-cmd", never_registers,
    ) as (child, lines):  # fmt: skip
        assert child.wait(timeout=90) == 1
    text = "".join(lines)
    assert "still waiting for the extension to register" in text  # said while waiting
    assert "FAILED: still waiting for the extension to register after 6 s" in text
    assert "ready:" not in text
    assert list(tmp_path.iterdir()) == []  # and nothing left behind


def test_c2_port_moves_the_rule_with_the_listener(tmp_path: Path) -> None:
    port = _free_port()
    with demo(tmp_path, "--c2-port", str(port), "--register-timeout-secs", "90") as (
        child,
        lines,
    ):
        wait_for(lambda: any("ready:" in line for line in lines) or child.poll() is not None,
                 timeout_secs=100, interval_secs=0.2)  # fmt: skip
        assert child.poll() is None, "".join(lines)
        with socket.create_connection(("127.0.0.1", port)) as client:
            client_port = client.getsockname()[1]
            wait_for(lambda: any("=== ALERT" in line for line in lines), timeout_secs=90)
        wait_for(lambda: any(line.startswith("=" * 70) for line in lines), timeout_secs=10)
    text = "".join(lines)
    body = text[text.index("=== ALERT") :].split("\n", 1)[1]
    alert = json.loads(body[: body.index("\n" + "=" * 70)])
    assert alert["rule"] == "demo-c2-port"
    assert alert["connection"]["remote_port"] == port
    assert alert["connection"]["local_port"] == client_port
    assert child.returncode == 0
    assert list(tmp_path.iterdir()) == []


def test_failed_start_removes_its_temp_folder(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with demo(tmp_path, "--c2-port", str(port)) as (child, lines):
            assert child.wait(timeout=60) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in "".join(lines)
    assert list(tmp_path.iterdir()) == []
