"""Direction from evidence: a socket sharing a listener's port (SO_REUSEPORT) that
connects out is not labelled inbound."""

from __future__ import annotations

import subprocess
import sys

from extension.collect import select_collector
from extension.collect.linux_events import EventsUnavailableError, LinuxEventSource
from extension.enrich.process import ProcessTracker
from extension.sampler import Sampler
from extension.serve.table import TrackedConnectionsTable
from tests.helpers.flows import Server
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for

_REUSE = r"""
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
print(port, flush=True)
if sys.argv[1] == "both":  # this process also connects out from the listener's port
    out = socket.socket()
    out.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    out.bind(("127.0.0.1", port))
    out.connect(("127.0.0.1", int(sys.argv[2])))
sys.stdin.read()
"""

_SPOOF = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.connect(("127.0.0.1", int(sys.argv[2])))
print("connected", flush=True)
sys.stdin.read()
"""


def _start(code: str, *argv: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, argv)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip


def _stop(*children: subprocess.Popen[bytes]) -> None:
    for child in children:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()


def _row(sampler: Sampler, pid: int, remote_port: int) -> dict[str, str]:
    table = TrackedConnectionsTable(sampler)
    found: list[dict[str, str]] = []

    def seen() -> bool:
        wanted = (str(pid), str(remote_port))
        found[:] = [r for r in table.generate({}) if (r.get("pid"), r.get("remote_port")) == wanted]
        return len(found) == 1

    wait_for(seen, timeout_secs=15, interval_secs=0.1)
    return found[0]


def _spoof(sampler_of: object) -> tuple[str, str]:
    assert callable(sampler_of)
    with Server("tc_dir_remote") as remote:
        listener = _start(_REUSE, "one")
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        sampler = sampler_of()
        sampler.start()  # sampling and event threads, as in the extension
        spoof = _start(_SPOOF, port, remote.port)
        assert spoof.stdout is not None
        spoof.stdout.readline()
        try:
            row = _row(sampler, spoof.pid, remote.port)
        finally:
            _stop(spoof, listener)
        own = _start(_REUSE, "both", remote.port)  # listens and connects out itself
        assert own.stdout is not None
        own.stdout.readline()
        try:
            own_row = _row(sampler, own.pid, remote.port)
        finally:
            _stop(own)
            sampler.stop()
    return row["direction"], own_row["direction"]


def test_sampling_says_unknown_rather_than_inbound() -> None:
    spoofed, own = _spoof(lambda: Sampler(select_collector(), sample_interval_ms=200))
    assert spoofed == "", "it shares the listener's port but holds no listener: unknown"
    assert own == "inbound", "sampling alone cannot tell: the process holds the listener"


def test_kernel_events_see_who_connected() -> None:
    source = LinuxEventSource(ProcessTracker())
    try:
        source.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here: {err}")
    try:
        spoofed, own = _spoof(
            lambda: Sampler(select_collector(), sample_interval_ms=200, events=source)
        )
    finally:
        source.stop()
    assert (spoofed, own) == ("outbound", "outbound")
