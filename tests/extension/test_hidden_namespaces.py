"""Sockets in network namespaces no process is in are listed, with their owners.

A process enters a namespace with setns(2), opens sockets there and goes back
home: its sockets stay in that namespace, which only a bind mount (``ip netns
add``) or an open descriptor keeps alive. These tests make exactly that with
a child process and look for its sockets by its pid, the namespace's inode and
the ports it reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from extension.collect.linux_proc import LinuxProcCollector
from extension.model import SocketRecord
from tests.helpers.privileges import network_namespace, require

_CHILD = r"""
import ctypes, json, os, socket, sys
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)
home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
if sys.argv[1] == "mount":  # enter the namespace ip netns mounted
    target = os.open(sys.argv[2], os.O_RDONLY)
    assert libc.setns(target, CLONE_NEWNET) == 0, ctypes.get_errno()
    os.close(target)
    keep = None
else:  # a new namespace that only our descriptor will keep alive
    assert libc.unshare(CLONE_NEWNET) == 0, ctypes.get_errno()
    keep = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
ns = os.stat("/proc/thread-self/ns/net").st_ino
listener = socket.create_server(("0.0.0.0", 0))
datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
datagrams.bind(("0.0.0.0", 0))
assert libc.setns(home, CLONE_NEWNET) == 0, ctypes.get_errno()  # back home
assert os.stat("/proc/self/ns/net").st_ino != ns
print(json.dumps([ns, listener.getsockname()[1], datagrams.getsockname()[1]]), flush=True)
sys.stdin.read()
"""


def _hide(*argv: str) -> tuple[subprocess.Popen[bytes], int, int, int]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *argv],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None
    ns, tcp_port, udp_port = json.loads(child.stdout.readline())
    return child, ns, tcp_port, udp_port


def _stop(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.wait(timeout=10)
    child.stdout.close()


def _mine(records: list[SocketRecord], ns: int, pid: int) -> set[tuple[int, int, str]]:
    return {
        (r.protocol, r.local_port, r.state)
        for r in records
        if r.net_namespace == ns and r.pid == pid
    }


def _member_namespaces() -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                found.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
            except OSError:
                continue
    return found


def test_a_namespace_kept_by_a_bind_mount() -> None:
    require(os.geteuid() == 0, "entering network namespaces needs root")
    with network_namespace() as name:
        child, ns, tcp_port, udp_port = _hide("mount", f"/run/netns/{name}")
        try:
            assert ns not in _member_namespaces(), "no process is in it"
            collector = LinuxProcCollector()
            found = _mine(collector.collect(), ns, child.pid)
        finally:
            _stop(child)
    assert found == {(6, tcp_port, "LISTEN"), (17, udp_port, "")}
    assert collector.unlisted_namespaces >= 1


def test_a_namespace_kept_by_an_open_descriptor() -> None:
    require(os.geteuid() == 0, "entering network namespaces needs root")
    child, ns, tcp_port, udp_port = _hide("fd")
    try:
        assert ns not in _member_namespaces(), "no process is in it"
        collector = LinuxProcCollector()
        collector.collect()  # its first call scans every fd: the descriptor is seen
        found = _mine(collector.collect(), ns, child.pid)
    finally:
        _stop(child)
    assert found == {(6, tcp_port, "LISTEN"), (17, udp_port, "")}
    after = LinuxProcCollector().collect()
    assert not [r for r in after if r.net_namespace == ns], "gone with its last reference"
