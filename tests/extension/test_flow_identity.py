"""A flow does not outlive its socket: a UDP source port reused by another
process (or another socket) to the same server is a new flow with its own owner.

The event source is fed tracepoint records laid out as the kernel's
``format`` files describe them; the tracker gets flow events; the last test
uses real sockets in two child processes and finds them by their pids.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from extension.collect.linux_events import EventsUnavailableError, LinuxEventSource
from extension.collect.perf import TracepointFormat
from extension.enrich.connections import ConnectionTracker
from extension.enrich.process import ProcessTracker
from extension.model import FlowEvent, ProcessInfo, SocketRecord
from tests.helpers.flows import Server
from tests.helpers.osqueryd import narrowed_pack, short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for

NS = 4026531840
DIG = ProcessInfo(name="dig", path="/usr/bin/dig", uid=1000, username="alice", parent=1)
CURL = ProcessInfo(name="curl", path="/usr/bin/curl", uid=1000, username="alice", parent=1)

FIB4 = TracepointFormat("fib", "fib_table_lookup", 1,
                        {"src": (0, 4), "dst": (4, 4), "sport": (8, 2), "dport": (10, 2)})
SEND = TracepointFormat("sock", "sock_send_length", 2, {"sk": (0, 8), "ret": (8, 4)})
SRC, DST = socket.inet_aton("10.0.0.5"), socket.inet_aton("203.0.113.53")


class Feed:
    """An event source that never opened the kernel, fed records by hand."""

    def __init__(self) -> None:
        self.source = LinuxEventSource()
        self.fib = self.source._decoder_fib4(FIB4)
        self.send = self.source._decoder_send(SEND)

    def sendto(self, at_ns: int, pid: int, sk: int, sport: int = 53000) -> None:
        """One sendto(): the route lookup, then the send, in the task ``pid``."""
        self.fib(at_ns, pid, pid, SRC + DST + struct.pack("<HH", sport, 53), 0)
        self.send(at_ns + 1000, pid, pid, struct.pack("<Qi", sk, 40), 0)

    def finish(self, at_ns: int) -> list[FlowEvent]:
        return self.source._finish(at_ns)


def test_udp_port_reused_by_another_process_is_a_new_flow_and_ends_the_old() -> None:
    feed = Feed()
    feed.sendto(1_000_000_000, pid=100, sk=0xFFFF0001)
    (first,) = feed.finish(1_100_000_000)
    assert first.record.pid == 100 and first.ended is None
    # 2 s later another process's socket sends from the same port to the same server.
    feed.sendto(3_000_000_000, pid=200, sk=0xFFFF0002)
    later = {e.key: e for e in feed.finish(3_100_000_000)}
    assert first.key in later, "the first flow is reported again, ended"
    assert later[first.key].ended is not None and later[first.key].record.pid == 100
    (new,) = [e for k, e in later.items() if k != first.key]
    assert new.record.pid == 200 and new.ended is None
    assert new.started > later[first.key].started


def test_udp_port_reused_by_another_socket_of_the_same_process_is_a_new_flow() -> None:
    feed = Feed()
    feed.sendto(1_000_000_000, pid=100, sk=0xFFFF0001)
    (first,) = feed.finish(1_100_000_000)
    feed.sendto(3_000_000_000, pid=100, sk=0xFFFF0002)
    keys = {e.key for e in feed.finish(3_100_000_000)}
    assert first.key in keys and len(keys) == 2


def test_a_socket_address_reused_by_another_process_is_a_new_flow() -> None:
    # The kernel frees a socket and hands its memory to the next one: same sk.
    feed = Feed()
    feed.sendto(1_000_000_000, pid=100, sk=0xFFFF0001)
    (first,) = feed.finish(1_100_000_000)
    feed.sendto(3_000_000_000, pid=200, sk=0xFFFF0001)
    later = {e.key: e for e in feed.finish(3_100_000_000)}
    assert later[first.key].ended is not None
    assert [e.record.pid for k, e in later.items() if k != first.key] == [200]


def test_the_same_socket_sending_again_stays_one_flow() -> None:
    feed = Feed()
    feed.sendto(1_000_000_000, pid=100, sk=0xFFFF0001)
    (first,) = feed.finish(1_100_000_000)
    feed.sendto(3_000_000_000, pid=100, sk=0xFFFF0001)
    assert all(e.key == first.key and e.ended is None for e in feed.finish(3_100_000_000))


def _udp(pid: int) -> SocketRecord:
    return SocketRecord(pid, 2, 17, "10.0.0.5", 53000, "203.0.113.53", 53, "", None, NS)


def test_tracker_does_not_merge_another_flow_into_an_open_row_by_its_5_tuple() -> None:
    tracker = ConnectionTracker(lambda pid: ProcessInfo(), linger_secs=6)
    tracker.observe([FlowEvent(("udp", 1), _udp(100), DIG, "outbound", "", 100.0)], now=100.05)
    # Another process's flow on the same 5-tuple, before any sample came.
    tracker.observe([FlowEvent(("udp", 2), _udp(200), CURL, "outbound", "", 101.0)], now=101.05)
    tracker.update([], now=101.5, started=101.4)
    tracker.update([], now=102.0, started=101.9)
    rows = sorted((r["pid"], r["name"]) for r in tracker.rows(102.1))
    assert rows == [("100", "dig"), ("200", "curl")]


def test_tracker_closes_an_event_row_whose_5_tuple_another_socket_took() -> None:
    tracker = ConnectionTracker(lambda pid: ProcessInfo(), linger_secs=6)
    tracker.observe([FlowEvent(("udp", 1), _udp(100), DIG, "outbound", "", 100.0)], now=100.05)
    tracker.observe([FlowEvent(("udp", 2), _udp(200), CURL, "outbound", "", 101.0)], now=101.05)
    assert tracker.lingering == 1, "the first flow's socket is gone: its row has closed"


_SEND_FROM = """
import ctypes, socket, sys
if len(sys.argv) > 4:
    ctypes.CDLL(None).prctl(15, sys.argv[4].encode(), 0, 0, 0)  # PR_SET_NAME
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
if sys.argv[3] == "connect":
    sock.connect(("127.0.0.1", int(sys.argv[2])))
    sock.send(b"q")
else:
    sock.sendto(b"q", ("127.0.0.1", int(sys.argv[2])))
sock.close()
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_real_udp_port_reuse_by_two_processes_gives_each_its_own_flow() -> None:
    source = LinuxEventSource(ProcessTracker())
    try:
        source.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here: {err}")
    try:
        with Server("tc_srv_reuse") as server:
            for how in ("sendto", "connect"):
                port = _free_udp_port()
                pids = []
                for _ in range(2):
                    child = subprocess.Popen(
                        [sys.executable, "-c", _SEND_FROM, str(port), str(server.port), how]
                    )
                    assert child.wait(timeout=30) == 0
                    pids.append(child.pid)
                seen: dict[tuple[object, ...], FlowEvent] = {}
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    for ev in source.wait(0.05):
                        seen[ev.key] = ev
                    owners = {
                        e.record.pid
                        for e in seen.values()
                        if e.record.protocol == 17
                        and (e.record.local_port, e.record.remote_port) == (port, server.port)
                    }
                    if set(pids) <= owners:
                        break
                assert set(pids) <= owners, f"{how}: each process's datagram is its own flow"
    finally:
        source.stop()



def _logged(results_log: Path) -> list[tuple[str, dict[str, str]]]:
    if not results_log.exists():
        return []
    lines = [json.loads(raw) for raw in results_log.read_text(encoding="utf-8").splitlines()]
    return [(line["action"], line["columns"]) for line in lines]


def test_through_the_chain_each_process_reusing_a_udp_port_is_logged_as_itself() -> None:
    probe = LinuxEventSource()
    try:
        probe.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here: {err}")
    finally:
        probe.stop()
    with (
        short_tmpdir() as workdir,
        standin_with_extension(workdir, run_scheduler=True) as osqd,
        Server("tc_reuse_srv") as server,
    ):
        port = _free_udp_port()
        osqd.add_pack("tracked_connections", narrowed_pack(
            f"protocol = 17 AND local_port = {port} AND remote_port = {server.port}"))  # fmt: skip
        sent = []
        for name in ("tc_reuse_a", "tc_reuse_b", "tc_reuse_c"):
            child = subprocess.Popen(
                [sys.executable, "-c", _SEND_FROM, str(port), str(server.port), "sendto", name]
            )
            assert child.wait(timeout=30) == 0
            sent.append((str(child.pid), name))

        def added() -> set[tuple[str, str]]:
            return {
                (c.get("pid", ""), c.get("name", ""))
                for action, c in _logged(osqd.results_log_path)
                if action == "added" and c.get("local_port") == str(port)
                and c.get("remote_port") == str(server.port)
            }  # fmt: skip

        wait_for(lambda: set(sent) <= added(), timeout_secs=60, interval_secs=0.5)
        assert set(sent) <= added()
