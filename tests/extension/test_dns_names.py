"""remote_hostname: names from the DNS answers this host receives.

The rule of the name cache is tested on its own; then with real parts: a
DNS server (dnspython) on 127.0.0.1 port 53 and one inside a network
namespace this test creates, real lookups (dnspython's resolver over UDP
and TCP, glibc's getaddrinfo), real connections, and the extension run by
the osqueryd stand-in. Rows are found by the connecting process's pid and
its socket's inode, never by port alone.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from extension.collect.dns_capture import DnsCapture
from extension.enrich.names import NameCache
from osqueryd_standin import Standin
from tests.helpers.dns_server import ROOT, dns_server, namespace_with_dns
from tests.helpers.osqueryd import short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for

# ------------------------------------------------------------- the rule


def test_the_latest_answer_in_the_namespace_wins() -> None:
    cache = NameCache()
    cache.add(1, "old.example", [("192.0.2.7", 300)], arrived=100.0)
    cache.add(1, "new.example", [("192.0.2.7", 300)], arrived=110.0)
    cache.add(2, "other-ns.example", [("192.0.2.7", 300)], arrived=115.0)
    assert cache.lookup(1, "192.0.2.7", None, began=120.0) == ("new.example", "namespace")
    assert cache.lookup(1, "192.0.2.7", None, began=105.0) == ("old.example", "namespace")
    assert cache.lookup(1, "192.0.2.8", None, began=120.0) is None


def test_an_answer_to_the_process_itself_beats_a_later_one_to_another() -> None:
    cache = NameCache()
    cache.note_client(1, 17, 40001, pid=500, at=99.0)
    cache.note_client(1, 17, 40002, pid=600, at=99.5)
    cache.add(1, "mine.example", [("192.0.2.7", 300)], arrived=100.0, client=(1, 17, 40001))
    cache.add(1, "theirs.example", [("192.0.2.7", 300)], arrived=101.0, client=(1, 17, 40002))
    assert cache.lookup(1, "192.0.2.7", 500, began=102.0) == ("mine.example", "process")
    assert cache.lookup(1, "192.0.2.7", 600, began=102.0) == ("theirs.example", "process")
    assert cache.lookup(1, "192.0.2.7", 700, began=102.0) == ("theirs.example", "namespace")
    # Port 40001 reused by another process later: the answer was still 500's.
    cache.note_client(1, 17, 40001, pid=700, at=103.0)
    cache.add(1, "again.example", [("192.0.2.7", 300)], arrived=104.0, client=(1, 17, 40001))
    assert cache.lookup(1, "192.0.2.7", 500, began=105.0) == ("mine.example", "process")
    assert cache.lookup(1, "192.0.2.7", 700, began=105.0) == ("again.example", "process")


def test_another_namespace_is_only_a_host_wide_guess() -> None:
    cache = NameCache()
    cache.add(2, "container.example", [("2001:db8::7", 300)], arrived=100.0)
    assert cache.lookup(1, "2001:db8::7", 500, began=101.0) == ("container.example", "host")
    assert cache.lookup(2, "2001:db8::7", 500, began=101.0) == ("container.example", "namespace")


def test_answers_after_the_connection_or_past_their_ttl_do_not_count() -> None:
    cache = NameCache(ttl_floor_secs=60.0)
    cache.add(1, "later.example", [("192.0.2.7", 300)], arrived=200.0)
    assert cache.lookup(1, "192.0.2.7", None, began=199.0) is None
    cache.add(1, "short.example", [("192.0.2.9", 5)], arrived=100.0)
    assert cache.lookup(1, "192.0.2.9", None, began=159.0) == ("short.example", "namespace")
    assert cache.lookup(1, "192.0.2.9", None, began=161.0) is None  # the 60 s floor ran out
    cache.add(1, "long.example", [("192.0.2.10", 3600)], arrived=100.0)
    assert cache.lookup(1, "192.0.2.10", None, began=3699.0) == ("long.example", "namespace")


def test_the_cache_is_bounded() -> None:
    cache = NameCache(max_entries=100)
    for n in range(1000):
        cache.add(1, f"n{n}.example", [(f"10.0.{n // 256}.{n % 256}", 300)], arrived=float(n))
        cache.note_client(1, 17, n, pid=n, at=float(n))
    assert cache.size == 100
    assert cache.lookup(1, "10.0.3.231", None, began=1000.0) == ("n999.example", "namespace")
    assert cache.lookup(1, "10.0.3.131", None, began=1000.0) is None  # n899: the older went
    assert cache.lookup(1, "10.0.3.132", None, began=1000.0) == ("n900.example", "namespace")
    # Per address: every answer of the last 10 s and the latest of each name
    # before, at most 32; then the 24 latest of those.
    for n in range(100):
        cache.add(1, f"alias{n % 3}.example", [("192.0.2.1", 300)], arrived=3000.0 + n / 10)
    assert cache.lookup(1, "192.0.2.1", None, began=3009.95) == ("alias0.example", "namespace")
    assert cache.lookup(1, "192.0.2.1", None, began=3007.25) == ("alias0.example", "namespace")
    assert cache.lookup(1, "192.0.2.1", None, began=3007.15) is None  # pruned at n = 95
    for n in range(100):
        cache.add(1, f"far{n}.example", [("192.0.2.2", 300)], arrived=4000.0 + n)
    assert cache.lookup(1, "192.0.2.2", None, began=4099.0) == ("far99.example", "namespace")
    assert cache.lookup(1, "192.0.2.2", None, began=4072.5) == ("far72.example", "namespace")
    assert cache.lookup(1, "192.0.2.2", None, began=4071.5) is None
    # Older than 10 s, only the latest of each name stays.
    for n in range(40):
        cache.add(1, f"pair{n % 2}.example", [("192.0.2.3", 300)], arrived=5000.0 + n)
    assert cache.lookup(1, "192.0.2.3", None, began=5022.5) == ("pair0.example", "namespace")
    assert cache.lookup(1, "192.0.2.3", None, began=5021.5) is None  # both names came later
    # The same name again to the same socket adds nothing but a later expiry.
    for n in range(100):
        cache.add(1, "same.example", [("192.0.2.4", 30)], arrived=6000.0 + n, client=(1, 17, 5))
    assert cache.lookup(1, "192.0.2.4", None, began=6000.0) == ("same.example", "namespace")
    assert cache.lookup(1, "192.0.2.4", None, began=6150.0) == ("same.example", "namespace")
    assert cache.lookup(1, "192.0.2.4", None, began=6170.0) is None


# -------------------------------------------------- the capture, in-process

_RESOLVE = r"""
import json, os, socket, sys
import dns.message, dns.query, dns.resolver
server, name, how, kind = sys.argv[1:5]
if how == "udp":
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    address = resolver.resolve(name, kind)[0].address
else:
    reply = dns.query.tcp(dns.message.make_query(name, kind), server, timeout=5)
    address = [rd.address for rrset in reply.answer for rd in rrset if hasattr(rd, "address")][0]
family = socket.AF_INET6 if ":" in address else socket.AF_INET
sock = socket.socket(family, socket.SOCK_DGRAM)
sock.connect((address, 9))  # a connected UDP socket: nothing is sent
print(json.dumps([os.getpid(), os.fstat(sock.fileno()).st_ino, address]), flush=True)
sys.stdin.read()
"""

_NAMES: dict[str, list[str] | str] = {
    "api.tc-test.example": ["198.51.100.7"],
    "www.tc-test.example": "cname:edge.tc-test.example",
    "edge.tc-test.example": ["198.51.100.8", "2001:db8::8"],
    "tcp.tc-test.example": ["203.0.113.9"],
}


@contextmanager
def _resolving(server: str, name: str, how: str, kind: str = "A") -> Iterator[tuple[int, int, str]]:
    """A process that looked ``name`` up and holds a UDP socket connected to its address."""
    child = subprocess.Popen([sys.executable, "-c", _RESOLVE, server, name, how, kind], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        pid, inode, address = json.loads(child.stdout.readline())
        yield pid, inode, address
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()


def test_the_capture_reads_udp_and_tcp_answers_and_nothing_else() -> None:
    require(os.geteuid() == 0, "packet sockets need CAP_NET_RAW (root)")
    names = NameCache()
    capture = DnsCapture(names)
    capture.start()
    own = os.stat("/proc/self/ns/net").st_ino
    try:
        with dns_server(_NAMES) as server:
            with _resolving(server, "api.tc-test.example", "udp"):
                pass
            with _resolving(server, "WWW.tc-test.example", "udp", "AAAA"):
                pass
            with _resolving(server, "tcp.tc-test.example", "tcp"):
                pass
            capture.drain()
            now = time.time()
            assert names.lookup(own, "198.51.100.7", None, now) == (
                "api.tc-test.example", "namespace")  # fmt: skip
            assert names.lookup(own, "2001:db8::8", None, now) == (
                "www.tc-test.example", "namespace")  # fmt: skip
            assert names.lookup(own, "203.0.113.9", None, now) == (
                "tcp.tc-test.example", "namespace")  # fmt: skip
            before = capture.stats()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for _ in range(200):
                    sender.sendto(b"not dns", ("127.0.0.1", 9))
            capture.drain()
            after = capture.stats()
    finally:
        capture.stop()
    assert before.state == "on" and before.namespaces >= 1
    assert before.answers_parsed >= 3 and before.cache_size >= 3
    # Other DNS traffic of this host may pass meanwhile; the 200 datagrams may not.
    assert after.packets_read - before.packets_read < 200


# ------------------------------------------------------ through the chain


def _rows(osqd: Standin, where: str) -> list[dict[str, str]]:
    return osqd.query(
        "SELECT pid, socket, net_namespace, remote_address, remote_hostname,"
        f" remote_hostname_source FROM tracked_connections WHERE {where}"
    )


def _row_of(osqd: Standin, pid: int, inode: int) -> dict[str, str]:
    found: list[dict[str, str]] = []

    def seen() -> bool:
        found[:] = [r for r in _rows(osqd, f"pid = {pid}") if r.get("socket") == str(inode)]
        return bool(found)

    wait_for(seen, timeout_secs=30, interval_secs=0.3)
    return found[0]


def _expected_source(osqd: Standin) -> str:
    """'process' where kernel events show who owns each DNS client socket."""
    (stats,) = osqd.query("SELECT source, dns, dns_off_reason FROM tracked_connections_stats")
    assert stats["dns"] in ("on", "degraded"), stats
    return "process" if stats["source"] == "events+sampling" else "namespace"


def test_a_process_that_resolves_and_connects_gets_the_name_on_its_row() -> None:
    require(os.geteuid() == 0, "packet sockets need CAP_NET_RAW (root)")
    with (
        short_tmpdir() as workdir,
        dns_server(_NAMES) as server,
        standin_with_extension(workdir, "--sample-interval-ms", "250") as osqd,
    ):
        source = _expected_source(osqd)
        with (
            _resolving(server, "api.tc-test.example", "udp") as (pid1, inode1, _),
            _resolving(server, "www.tc-test.example", "udp") as (pid2, inode2, address2),
            _resolving(server, "tcp.tc-test.example", "tcp") as (pid3, inode3, _),
        ):
            first = _row_of(osqd, pid1, inode1)
            second = _row_of(osqd, pid2, inode2)
            third = _row_of(osqd, pid3, inode3)
    assert (first["remote_address"], first["remote_hostname"]) == (
        "198.51.100.7", "api.tc-test.example")  # fmt: skip
    assert address2 == "198.51.100.8"
    assert second["remote_hostname"] == "www.tc-test.example"  # the name asked, not the CNAME
    assert third["remote_hostname"] == "tcp.tc-test.example"
    assert {r["remote_hostname_source"] for r in (first, second, third)} == {source}


def test_without_cap_net_raw_there_are_no_names_and_the_stats_say_why() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv (util-linux) is not installed")
    assert setpriv is not None
    drop = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]
    with short_tmpdir() as workdir, standin_with_extension(workdir, launcher=drop) as osqd:
        (stats,) = osqd.query(
            "SELECT dns, dns_off_reason, dns_packets_read FROM tracked_connections_stats"
        )
    assert stats["dns"] == "off" and stats["dns_packets_read"] == "0"
    assert "CAP_NET_RAW" in stats["dns_off_reason"], stats


def test_dns_on_refuses_to_start_without_cap_net_raw() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv (util-linux) is not installed")
    assert setpriv is not None
    run = subprocess.run(
        [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--", sys.executable, "-m",
         "extension", "--events", "off", "--dns", "on", "--socket", "/nonexistent/em"],
        cwd=ROOT, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 1
    assert b"CAP_NET_RAW" in run.stderr


# ------------------------------------------------ inside a network namespace

_CONNECT = r"""
import json, os, socket, sys
plan = json.loads(sys.argv[1])
listener = socket.create_server(("::", 0), family=socket.AF_INET6, dualstack_ipv6=True)
port = listener.getsockname()[1]
held, out = [], []
for name, family in plan:
    infos = socket.getaddrinfo(name, port, socket.AF_INET6 if family == 6 else socket.AF_INET,
                               socket.SOCK_STREAM)
    address = infos[0][4][0]
    sock = socket.create_connection((address, port))
    held.append(sock)
    out.append([name, address, os.fstat(sock.fileno()).st_ino])
print(json.dumps([os.getpid(), os.stat("/proc/self/ns/net").st_ino, out]), flush=True)
sys.stdin.read()
"""


_Made = tuple[int, int, list[list[object]]]
"""(pid, network namespace inode, [[name, address, socket inode]])."""


@contextmanager
def _connecting(
    netns: str, plans: list[list[tuple[str, int]]], at_once: bool = True
) -> Iterator[list[_Made]]:
    """One process per plan in ``netns``, all at once or one after the other; each looks
    up its names in order, connects to each and holds the connections."""
    children: list[subprocess.Popen[bytes]] = []
    made: list[_Made] = []
    try:
        for plan in plans:
            children.append(subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-c", _CONNECT, json.dumps(plan)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))  # fmt: skip
            if not at_once:
                made.append(_report(children[-1]))
        if at_once:
            made = [_report(child) for child in children]
        yield made
    finally:
        for child in children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
            child.wait(timeout=20)
            child.stdout.close()


def _report(child: subprocess.Popen[bytes]) -> _Made:
    assert child.stdout is not None
    pid, ns, made = json.loads(child.stdout.readline())
    return pid, ns, made


def _named_rows(osqd: Standin, pid: int, inodes: set[int]) -> dict[int, dict[str, str]]:
    rows: dict[int, dict[str, str]] = {}

    def all_seen() -> bool:
        for r in _rows(osqd, f"pid = {pid}"):
            if int(r.get("socket") or 0) in inodes:
                rows[int(r["socket"])] = r
        return set(rows) == inodes

    wait_for(all_seen, timeout_secs=60, interval_secs=0.5)
    return rows


def test_names_inside_a_network_namespace_with_getaddrinfo() -> None:
    names: dict[str, list[str] | str] = {
        "db.ns-test.example": ["192.0.2.20", "2001:db8::20"],
        "alias.ns-test.example": "cname:db.ns-test.example",
    }
    with (
        namespace_with_dns(names) as netns,
        short_tmpdir() as workdir,
        standin_with_extension(workdir) as osqd,
    ):
        source = _expected_source(osqd)
        plan = [("db.ns-test.example", 4), ("alias.ns-test.example", 6)]
        with _connecting(netns, [plan]) as [(pid, ns, made)]:
            rows = _named_rows(osqd, pid, {int(str(m[2])) for m in made})
    by_inode = {int(str(inode)): (name, address) for name, address, inode in made}
    assert sorted(str(m[1]) for m in made) == ["192.0.2.20", "2001:db8::20"]
    for inode, row in rows.items():
        name, address = by_inode[inode]
        assert row["net_namespace"] == str(ns) and row["remote_address"] == address
        assert (row["remote_hostname"], row["remote_hostname_source"]) == (name, source)


def test_names_that_share_addresses_are_told_apart_by_recency_and_process() -> None:
    # 20 names on 10 addresses; 4 processes each look up and connect 25 times,
    # at once where kernel events tell whose lookup was whose (one after the
    # other otherwise): the row must carry the name its own process asked for last.
    names: dict[str, list[str] | str] = {
        f"n{n}.share.example": [f"192.0.2.{100 + n % 10}"] for n in range(20)
    }
    plans = [[(f"n{(w * 7 + i) % 20}.share.example", 4) for i in range(25)] for w in range(4)]
    with (
        namespace_with_dns(names) as netns,
        short_tmpdir() as workdir,
        standin_with_extension(workdir) as osqd,
    ):
        source = _expected_source(osqd)
        with _connecting(netns, plans, at_once=source == "process") as children:
            results = [
                (made, _named_rows(osqd, pid, {int(str(m[2])) for m in made}))
                for pid, _, made in children
            ]
        (stats,) = osqd.query("SELECT * FROM tracked_connections_stats")
    right = total = 0
    sources: dict[str, int] = {}
    for made, rows in results:
        for name, _address, inode in made:
            total += 1
            row = rows[int(str(inode))]
            right += row.get("remote_hostname") == name
            found = row.get("remote_hostname_source", "")
            sources[found] = sources.get(found, 0) + 1
    dns_stats = sorted((k, v) for k, v in stats.items() if k.startswith("dns"))
    assert sources == {source: 100}, (sources, right, dns_stats)
    assert total == 100
    assert right >= 99, f"{right} of {total} rows carry the right name"


def test_namespaces_that_cannot_be_entered_leave_the_capture_degraded() -> None:
    setpriv = shutil.which("setpriv")
    require(setpriv is not None, "setpriv (util-linux) is not installed")
    assert setpriv is not None
    # Root without CAP_SYS_ADMIN keeps CAP_NET_RAW but cannot setns(2).
    drop = [setpriv, "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]
    with (
        namespace_with_dns({"x.example": ["192.0.2.1"]}),
        short_tmpdir() as workdir,
        standin_with_extension(workdir, launcher=drop) as osqd,
    ):
        (stats,) = osqd.query(
            "SELECT dns, dns_off_reason, dns_namespaces FROM tracked_connections_stats"
        )
    assert stats["dns"] == "degraded", stats
    assert "not read" in stats["dns_off_reason"] and int(stats["dns_namespaces"]) >= 1, stats
