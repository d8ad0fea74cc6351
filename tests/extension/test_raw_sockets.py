"""Raw IP, ICMP and packet sockets are rows with their owner (what BPFDoor-like
implants listen on)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from extension.collect.linux_proc import LinuxProcCollector
from extension.collect.raw_sockets import parse_packet, parse_raw
from tests.helpers.osqueryd import short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for

_CHILD = r"""
import json, os, socket, sys
held = {
    "raw_icmp": socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "raw_icmp6": socket.socket(socket.AF_INET6, socket.SOCK_RAW, 58),
    "packet_all": socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)),
    "packet_lo": socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800)),
}
held["packet_lo"].bind(("lo", 0))
print(json.dumps({k: os.fstat(s.fileno()).st_ino for k, s in held.items()}), flush=True)
sys.stdin.read()
"""


def _child() -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    child = subprocess.Popen([sys.executable, "-c", _CHILD],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdout is not None
    return child, json.loads(child.stdout.readline())


def _stop(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.wait(timeout=10)
    child.stdout.close()


def test_parsers_read_the_kernels_lines() -> None:
    raw = (b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
           b"   uid  timeout inode ref pointer drops\n"
           b"  72: 00000000:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000"
           b"     0        0 5136661 2 0000000052cb5f85 0\n")  # fmt: skip
    (sock,) = parse_raw(raw)
    assert (sock.number, sock.inode, sock.remote_number) == (1, 5136661, 0)
    packet = (b"sk               RefCnt Type Proto  Iface R Rmem   User   Inode\n"
              b"00000000517f69e1 3      2    0800   1     1 0      0      5136663\n")  # fmt: skip
    (psock,) = parse_packet(packet)
    assert (psock.ethertype, psock.ifindex, psock.inode) == (0x0800, 1, 5136663)


def test_raw_and_packet_sockets_are_rows_with_their_owner() -> None:
    require(os.geteuid() == 0, "raw and packet sockets need root (CAP_NET_RAW)")
    child, inodes = _child()
    try:
        records = {r.socket: r for r in LinuxProcCollector().collect() if r.socket}
    finally:
        _stop(child)
    got = {name: records[inode] for name, inode in inodes.items()}
    assert {name: (r.family, r.protocol, r.interface, r.pid) for name, r in got.items()} == {
        "raw_icmp": (2, 1, None, child.pid),
        "raw_icmp6": (10, 58, None, child.pid),
        "packet_all": (17, 3, "", child.pid),
        "packet_lo": (17, 0x0800, "lo", child.pid),
    }


def test_they_reach_osquery_as_listening_rows() -> None:
    require(os.geteuid() == 0, "raw and packet sockets need root (CAP_NET_RAW)")
    with short_tmpdir() as workdir, standin_with_extension(workdir) as osqd:
        child, inodes = _child()
        try:
            sql = (
                "SELECT socket, family, protocol, interface, direction, name"
                f" FROM tracked_connections WHERE pid = {child.pid}"
            )
            wait_for(lambda: len(osqd.query(sql)) == 4, timeout_secs=60, interval_secs=0.5)
            rows = {r["socket"]: r for r in osqd.query(sql)}
        finally:
            _stop(child)
    packet_lo = rows[str(inodes["packet_lo"])]
    assert (packet_lo["family"], packet_lo["protocol"], packet_lo["interface"]) == (
        "17", "2048", "lo",
    )  # fmt: skip
    assert {r["direction"] for r in rows.values()} == {"listening"}
    assert rows[str(inodes["raw_icmp"])]["interface"] == "", "NULL (osquery shows '')"
