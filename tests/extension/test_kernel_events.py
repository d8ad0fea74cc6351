"""The kernel event source on real connections: every kind, every owner, namespaces, loss.

These need root (CAP_PERFMON or CAP_SYS_ADMIN) and tracefs; they skip with
the reason elsewhere, and fail in CI, which runs as root. Every assertion
finds the test's own connections by their pid and ports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from extension.collect.linux_events import EventsUnavailableError, LinuxEventSource
from extension.enrich.process import ProcessTracker
from extension.model import FlowEvent
from tests.helpers.flows import (
    Server,
    closed_ports,
    comm,
    forked_connects,
    refused,
    tcp_short,
    udp_short,
)
from tests.helpers.privileges import network_namespace, require


def _started(**options: object) -> LinuxEventSource:
    source = LinuxEventSource(ProcessTracker(), **options)  # type: ignore[arg-type]
    try:
        source.start()
    except EventsUnavailableError as err:
        require(False, f"kernel events unavailable here: {err}")
    return source


@pytest.fixture
def events() -> Iterator[LinuxEventSource]:
    source = _started()
    try:
        yield source
    finally:
        source.stop()


def collect(source: LinuxEventSource, done: object, timeout_secs: float = 10.0) -> list[FlowEvent]:
    """Read flow events until ``done(events)`` holds (or time runs out)."""
    assert callable(done)
    seen: list[FlowEvent] = []
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        seen += source.wait(0.05)
        if done(seen):
            break
    return seen


def latest(events: list[FlowEvent]) -> dict[tuple[object, ...], FlowEvent]:
    """The last report of each flow."""
    out: dict[tuple[object, ...], FlowEvent] = {}
    for ev in events:
        out[ev.key] = ev
    return out


def by_ports(events: list[FlowEvent], protocol: int) -> dict[tuple[int, int], FlowEvent]:
    return {
        (e.record.local_port, e.record.remote_port): e
        for e in latest(events).values()
        if e.record.protocol == protocol
    }


def test_one_millisecond_outbound_tcp_has_its_pid_name_and_end(
    events: LinuxEventSource,
) -> None:
    with Server("tc_srv_out") as server:
        made = tcp_short(server.port, 30)
        wanted = {(a.local_port, a.remote_port) for a in made}
        seen = collect(events, lambda s: wanted <= {
            k for k, e in by_ports(s, 6).items() if e.ended is not None})  # fmt: skip
    flows = by_ports(seen, 6)
    for key in wanted:
        flow = flows[key]
        assert flow.direction == "outbound" and flow.status == "connected"
        assert flow.record.pid == os.getpid() and flow.process is not None
        assert flow.process.name == comm() and flow.ended is not None
        assert flow.record.local_address == flow.record.remote_address == "127.0.0.1"


def test_refused_attempts_say_refused(events: LinuxEventSource) -> None:
    with closed_ports(20) as ports:
        refused(ports)
        seen = collect(events, lambda s: set(ports) <= {
            e.record.remote_port for e in latest(s).values() if e.status})  # fmt: skip
    flows = {e.record.remote_port: e for e in latest(seen).values() if e.record.pid == os.getpid()}
    for port in ports:
        assert flows[port].status == "refused" and flows[port].direction == "outbound"
        assert flows[port].record.local_port != 0 and flows[port].ended is not None


def test_inbound_is_owned_by_the_server_process(events: LinuxEventSource) -> None:
    with Server("tc_srv_in") as server:
        made = tcp_short(server.port, 30)
        wanted = {(server.port, a.local_port) for a in made}
        seen = collect(events, lambda s: wanted <= {
            k for k, e in by_ports(s, 6).items() if e.ended is not None})  # fmt: skip
    flows = by_ports(seen, 6)
    for key in wanted:
        flow = flows[key]
        assert flow.direction == "inbound" and flow.status == "connected"
        assert flow.record.pid == server.pid, "the task that closed it: the server"
        assert flow.process is not None and flow.process.name == server.name


def test_connected_udp_that_sends_once_is_a_flow(events: LinuxEventSource) -> None:
    with Server("tc_srv_udp") as server:
        made = udp_short(server.port, 20)
        wanted = {(a.local_port, a.remote_port) for a in made}
        seen = collect(events, lambda s: wanted <= set(by_ports(s, 17)))
    flows = by_ports(seen, 17)
    for key in wanted:
        flow = flows[key]
        assert flow.record.pid == os.getpid() and flow.direction == "outbound"
        assert flow.record.local_address == "127.0.0.1" and flow.status == ""
        assert flow.ended is not None, "its socket is gone: the flow has ended"


def test_udp_connect_that_sends_nothing_is_no_flow(events: LinuxEventSource) -> None:
    # What glibc's getaddrinfo does to sort candidate addresses (RFC 6724).
    probes = []
    for _ in range(5):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("127.0.0.1", 9))
        probes.append(probe.getsockname()[1])
        probe.close()
    with Server("tc_srv_udp2") as server:
        (sent,) = udp_short(server.port, 1)  # a real flow afterwards, as a marker
        seen = collect(events, lambda s: (sent.local_port, sent.remote_port) in by_ports(s, 17))
    flows = by_ports(seen, 17)
    assert (sent.local_port, sent.remote_port) in flows
    assert not any((port, 9) in flows for port in probes)


def test_unconnected_sendto_is_a_flow_with_a_local_address(events: LinuxEventSource) -> None:
    with Server("tc_srv_udp3") as server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.sendto(b"x", ("127.0.0.1", server.port))
        local_port = sock.getsockname()[1]
        sock.close()
        seen = collect(events, lambda s: (local_port, server.port) in by_ports(s, 17))
    flow = by_ports(seen, 17)[(local_port, server.port)]
    assert flow.record.local_address == "127.0.0.1", "the source the kernel chose, not 0.0.0.0"
    assert flow.record.pid == os.getpid()


def test_forked_children_that_exit_at_once_are_described(events: LinuxEventSource) -> None:
    with Server("tc_srv_fork") as server:
        made = forked_connects(server.port, 10, "tc_child")
        wanted = {(a.local_port, a.remote_port): a for a in made}
        seen = collect(events, lambda s: set(wanted) <= set(by_ports(s, 6)))
    flows = by_ports(seen, 6)
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read().rstrip(b"\0").replace(b"\0", b" ").decode()
    for key, attempt in wanted.items():
        flow = flows[key]
        assert flow.record.pid == attempt.pid and flow.process is not None
        assert flow.process.name == "tc_child"
        assert flow.process.parent == os.getpid()
        assert flow.process.cmdline == cmdline, "a fork without exec runs its parent's command"
        assert flow.process.uid == os.getuid()


def test_exec_child_is_described_after_it_exits(events: LinuxEventSource) -> None:
    with Server("tc_srv_exec") as server:
        code = (
            "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1])));"
            " print(s.getsockname()[1]); s.close()"
        )
        child = subprocess.run(
            [sys.executable, "-c", code, str(server.port)], capture_output=True, check=True
        )
        local_port = int(child.stdout)
        seen = collect(events, lambda s: (local_port, server.port) in by_ports(s, 6))
    flow = by_ports(seen, 6)[(local_port, server.port)]
    assert flow.process is not None and flow.record.pid not in (None, os.getpid())
    assert flow.process.parent == os.getpid()
    assert flow.process.path == os.path.realpath(sys.executable)
    assert flow.process.name is not None and flow.process.name.startswith("python")


def test_connections_inside_another_network_namespace(events: LinuxEventSource) -> None:
    code = (
        "import json, os, socket;"
        "srv = socket.create_server(('127.0.0.1', 0)); port = srv.getsockname()[1];"
        "c = socket.create_connection(('127.0.0.1', port)); a, _ = srv.accept();"
        "lp = c.getsockname()[1]; c.close(); a.close();"
        "print(json.dumps([os.getpid(), port, lp, os.stat('/proc/self/ns/net').st_ino]))"
    )
    with network_namespace() as name:
        out = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", code],
            capture_output=True,
            check=True,
        )
        pid, port, local_port, netns = json.loads(out.stdout)
        seen = collect(events, lambda s: {(local_port, port), (port, local_port)} <= {
            k for k, e in by_ports(s, 6).items() if e.ended is not None})  # fmt: skip
    flows = by_ports(seen, 6)
    outbound, inbound = flows[(local_port, port)], flows[(port, local_port)]
    assert outbound.record.pid == pid, "the host's pid for the task in the namespace"
    assert outbound.record.net_namespace == netns
    assert own_netns() != netns
    assert inbound.record.pid == pid and inbound.record.net_namespace == netns


def own_netns() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def test_a_full_ring_counts_the_kernels_losses_and_keeps_working() -> None:
    source = _started(ring_kib=4)  # one page per CPU
    try:
        with Server("tc_srv_loss") as server:
            tcp_short(server.port, 300, hold_secs=0)  # nobody reads meanwhile
            source.read()
            # The kernel reports a loss with the first record it can write after it.
            (after,) = tcp_short(server.port, 1, hold_secs=0)
            mark = (after.local_port, after.remote_port)
            seen = collect(source, lambda s: mark in by_ports(s, 6))
            lost = source.stats().events_lost
        assert lost > 0, "a page holds about 40 records: the kernel must have dropped some"
        assert mark in by_ports(seen, 6), "still reading"
    finally:
        source.stop()


def test_stop_releases_every_descriptor() -> None:
    before = len(os.listdir("/proc/self/fd"))
    source = _started()
    assert len(os.listdir("/proc/self/fd")) > before
    source.stop()
    assert len(os.listdir("/proc/self/fd")) == before
    assert source.stats().running is False
