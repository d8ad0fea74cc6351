"""LinuxProcCollector: recorded /proc lines, a fake /proc tree, live sockets.

The live tests open their own sockets and compare with psutil; the netns test
needs root and ``ip netns`` and is skipped where those are unavailable.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extension.collect import (
    CollectError,
    LinuxProcCollector,
    PsutilCollector,
    SocketOwners,
    select_collector,
)
from extension.collect.linux_proc import decode_address, parse_proc_net
from extension.model import SocketRecord
from tests.helpers.sockets import (
    close_with_reset,
    open_mixed_sockets,
    own_net_namespace,
    socket_inode,
    socket_inodes,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc only")

DATA = Path(__file__).parent / "data" / "proc_net"
ME = os.getpid()

_Key = tuple[int | None, int, int, str, int, str, int, str]


def _key(r: SocketRecord) -> _Key:
    return (
        r.pid,
        r.family,
        r.protocol,
        r.local_address,
        r.local_port,
        r.remote_address,
        r.remote_port,
        r.state,
    )


def _own_ns() -> int:
    return int(os.readlink("/proc/self/ns/net")[5:-1])


# ---------------------------------------------------------------- recorded


def test_decode_address_byte_order() -> None:
    assert decode_address(b"0100007F") == "127.0.0.1"
    assert decode_address(b"0302010A") == "10.1.2.3"
    assert decode_address(b"00000000000000000000000001000000") == "::1"
    assert decode_address(b"B80D012002000100000000000D0C0B0A") == "2001:db8:1:2::a0b:c0d"
    assert decode_address(b"0000000000000000FFFF00000302010A") == "::ffff:10.1.2.3"
    with pytest.raises(ValueError):
        decode_address(b"0100")


def test_decode_address_agrees_with_psutil_on_recorded_files() -> None:
    pslinux = pytest.importorskip("psutil._pslinux")
    decode = getattr(getattr(pslinux, "NetConnections", None), "decode_address", None)
    if decode is None:
        pytest.skip("psutil's private decoder moved")
    checked = 0
    for name in ("tcp", "tcp6", "udp", "udp6"):
        family = socket.AF_INET6 if name.endswith("6") else socket.AF_INET
        for line in (DATA / name).read_bytes().splitlines()[1:]:
            for field in line.split()[1:3]:
                hex_address, port = field.split(b":")
                if int(port, 16):
                    assert decode(field.decode(), family)[0] == decode_address(hex_address)
                    checked += 1
    assert checked >= 20


def test_parse_recorded_tcp_incl_time_wait() -> None:
    owners = {84287: 11, 84297: 11, 84288: 11, 84295: 11, 84289: 11}
    records = parse_proc_net((DATA / "tcp").read_bytes(), "tcp", owners, net_namespace=7)
    assert {_key(r) for r in records} == {
        (11, 2, 6, "10.1.2.3", 8080, "", 0, "LISTEN"),
        (11, 2, 6, "10.1.2.3", 7000, "", 0, "LISTEN"),
        (None, 2, 6, "10.1.2.3", 40003, "10.1.2.3", 7000, "TIME_WAIT"),
        (11, 2, 6, "10.1.2.3", 40000, "10.1.2.3", 8080, "ESTABLISHED"),
        (11, 2, 6, "10.1.2.3", 40002, "10.1.2.3", 9000, "ESTABLISHED"),
        (11, 2, 6, "10.1.2.3", 8080, "10.1.2.3", 40000, "ESTABLISHED"),
    }
    time_wait = next(r for r in records if r.state == "TIME_WAIT")
    assert time_wait.socket == 0 and time_wait.pid is None
    assert {r.socket for r in records} == {0, *owners}
    assert {r.net_namespace for r in records} == {7}


def test_parse_recorded_tcp6_ipv6_and_v4_mapped() -> None:
    records = parse_proc_net((DATA / "tcp6").read_bytes(), "tcp6")
    assert {(*_key(r), r.socket) for r in records} == {
        (None, 10, 6, "2001:db8:1:2::a0b:c0d", 8443, "", 0, "LISTEN", 84290),
        (None, 10, 6, "::", 9000, "", 0, "LISTEN", 84294),
        (
            None,
            10,
            6,
            "2001:db8:1:2::a0b:c0d",
            8443,
            "2001:db8:1:2::a0b:c0d",
            40001,
            "ESTABLISHED",
            84292,
        ),
        # IPv4-mapped: reported as IPv4, family 2.
        (None, 2, 6, "10.1.2.3", 9000, "10.1.2.3", 40002, "ESTABLISHED", 84296),
        (
            None,
            10,
            6,
            "2001:db8:1:2::a0b:c0d",
            40001,
            "2001:db8:1:2::a0b:c0d",
            8443,
            "ESTABLISHED",
            84291,
        ),
    }


def test_parse_recorded_udp_has_no_state() -> None:
    records = parse_proc_net((DATA / "udp").read_bytes(), "udp", {84300: 5})
    records += parse_proc_net((DATA / "udp6").read_bytes(), "udp6")
    assert {_key(r) for r in records} == {
        (5, 2, 17, "10.1.2.3", 5353, "", 0, ""),
        (None, 2, 17, "10.1.2.3", 40004, "10.1.2.3", 53, ""),
        (None, 10, 17, "2001:db8:1:2::a0b:c0d", 5354, "", 0, ""),
    }


def test_parse_wide_uid_and_unknown_state() -> None:
    line = (
        "   0: 0100007F:1F90 00000000:0000 0D 00000000:00000000 00:00000000 00000000"
        " 1234567        0 99 1 0000000000000000 100 0 0 10 0\n"
    )
    header = "  sl  local_address rem_address   st tx_queue rx_queue ...\n"
    (record,) = parse_proc_net((header + line).encode(), "tcp", {99: 3})
    assert (record.pid, record.state, record.socket, record.local_port) == (3, "UNKNOWN", 99, 8080)


def test_malformed_line_is_a_collect_error() -> None:
    data = b"  sl  local_address ...\n   0: 0100007F:1F90 00000000:0000 0A\n"
    with pytest.raises(CollectError):
        parse_proc_net(data, "tcp")


# ------------------------------------------------------------ fake /proc


def _hex4(address: str) -> str:
    return socket.inet_aton(address)[::-1].hex().upper()


def tcp_line(sl: int, local: tuple[str, int], remote: tuple[str, int], st: int, inode: int) -> str:
    """One /proc/net/tcp line in the kernel's layout (get_tcp4_sock)."""
    return (
        f"{sl:4d}: {_hex4(local[0])}:{local[1]:04X} {_hex4(remote[0])}:{remote[1]:04X}"
        f" {st:02X} 00000000:00000000 00:00000000 00000000 {0:5d} {0:8d} {inode}"
        " 1 0000000000000000 100 0 0 10 0"
    )


class FakeProc:
    """A directory laid out like /proc: pids with ns/net, net/*, fd/, stat."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ns_lines: dict[int, list[str]] = {}

    def add_pid(self, pid: int, ns: int = 1, start: int = 100) -> None:
        base = self.root / str(pid)
        (base / "ns").mkdir(parents=True, exist_ok=True)
        (base / "fd").mkdir(exist_ok=True)
        (base / "net").mkdir(exist_ok=True)
        link = base / "ns" / "net"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(f"net:[{ns}]")
        self.set_start(pid, start)
        self._write_net(pid, ns)

    def set_start(self, pid: int, start: int) -> None:
        fields = " ".join(["0"] * 18)
        (self.root / str(pid) / "stat").write_text(f"{pid} (fake (proc)) S {fields} {start} 0 0\n")

    def remove_pid(self, pid: int) -> None:
        base = self.root / str(pid)
        for sub in ("fd", "net", "ns"):
            for child in (base / sub).iterdir():
                child.unlink()
            (base / sub).rmdir()
        (base / "stat").unlink()
        base.rmdir()

    def set_self(self, pid: int) -> None:
        (self.root / "self").symlink_to(str(pid))

    def give_fd(self, pid: int, fd: int, inode: int) -> None:
        (self.root / str(pid) / "fd" / str(fd)).symlink_to(f"socket:[{inode}]")

    def take_fd(self, pid: int, fd: int) -> None:
        (self.root / str(pid) / "fd" / str(fd)).unlink()

    def set_sockets(self, ns: int, lines: list[str]) -> None:
        self.ns_lines[ns] = lines
        for entry in self.root.iterdir():
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") == f"net:[{ns}]":
                self._write_net(int(entry.name), ns)

    def _write_net(self, pid: int, ns: int) -> None:
        header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when ...\n"
        body = "".join(line + "\n" for line in self.ns_lines.get(ns, []))
        net = self.root / str(pid) / "net"
        (net / "tcp").write_text(header + body)
        (net / "udp").write_text(header)


@pytest.fixture
def fake(tmp_path: Path) -> FakeProc:
    proc = FakeProc(tmp_path)
    proc.add_pid(100, start=50)
    proc.set_self(100)
    proc.set_sockets(
        1,
        [
            tcp_line(0, ("0.0.0.0", 80), ("0.0.0.0", 0), 0x0A, 555),
            tcp_line(1, ("10.0.0.1", 80), ("10.0.0.2", 5000), 0x06, 0),
        ],
    )
    proc.give_fd(100, 3, 555)
    proc.give_fd(100, 4, 999)  # not an inet socket of ours (e.g. unix): ignored
    return proc


def _by_inode(records: list[SocketRecord]) -> dict[int | None, SocketRecord]:
    return {r.socket: r for r in records}


def test_fake_second_collect_does_not_scan(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    first = _by_inode(collector.collect())
    assert first[555].pid == 100 and first[0].pid is None
    assert first[555].net_namespace == 1
    scans, pids = collector.fd_scans, collector.pids_scanned
    assert scans == 1
    assert _by_inode(collector.collect()) == first
    assert (collector.fd_scans, collector.pids_scanned) == (scans, pids)


def test_fake_new_socket_of_a_known_holder_found_without_full_scan(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    collector.collect()
    lines = fake.ns_lines[1]
    fake.give_fd(100, 5, 556)  # pid 100 accepts a connection
    fake.set_sockets(
        1,
        [
            *lines,
            tcp_line(2, ("10.0.0.1", 80), ("10.0.0.3", 6000), 0x01, 556),
            tcp_line(3, ("10.0.0.1", 80), ("10.0.0.4", 6001), 0x06, 0),
        ],
    )
    records = _by_inode(collector.collect())
    assert records[556].pid == 100 and records[0].pid is None
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)
    collector.collect()
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)


def test_fake_new_socket_of_a_process_without_sockets_found_by_targeted_scan(
    fake: FakeProc,
) -> None:
    fake.add_pid(150, start=60)  # running, but holds no inet socket yet
    collector = LinuxProcCollector(str(fake.root))
    collector.collect()
    fake.give_fd(150, 3, 557)
    fake.set_sockets(
        1, [*fake.ns_lines[1], tcp_line(2, ("10.0.0.1", 4000), ("10.0.0.9", 80), 0x01, 557)]
    )
    assert _by_inode(collector.collect())[557].pid == 150
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)


def test_fake_reused_fd_number_of_a_shared_socket_is_reread(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    fake.add_pid(200, start=80)  # fork child holding 555 on fd 3 too
    fake.give_fd(200, 3, 555)
    assert _by_inode(collector.collect())[555].pid == 100
    # The child closes fd 3 (555 lives on in pid 100) and gets fd 3 again for
    # a new socket: 555 is shared, so the targeted scan does not trust the
    # child's fd 3 and finds 558 there.
    fake.take_fd(200, 3)
    fake.give_fd(200, 3, 558)
    fake.set_sockets(
        1, [*fake.ns_lines[1], tcp_line(2, ("10.0.0.1", 5000), ("10.0.0.9", 80), 0x01, 558)]
    )
    for _ in range(2):
        records = _by_inode(collector.collect())
        assert (records[555].pid, records[558].pid) == (100, 200)
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)


def test_fake_targeted_scan_trusts_fds_of_listed_sockets(
    fake: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    collector = LinuxProcCollector(str(fake.root))
    collector.collect()
    read: list[str] = []
    real_readlink = os.readlink

    def readlink(path: str) -> str:
        read.append(str(path))
        return real_readlink(path)

    monkeypatch.setattr(os, "readlink", readlink)
    fake.give_fd(100, 5, 556)
    fake.set_sockets(
        1, [*fake.ns_lines[1], tcp_line(2, ("10.0.0.1", 80), ("10.0.0.3", 6000), 0x01, 556)]
    )
    assert _by_inode(collector.collect())[556].pid == 100
    fd_reads = sorted(p.rsplit("/", 2)[-1] for p in read if "/fd/" in p)
    assert fd_reads == ["4", "5"]  # fd 3 (socket 555, still listed) not re-read


def test_fake_ownerless_inode_scanned_once(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    collector.collect()
    fake.set_sockets(
        1, [*fake.ns_lines[1], tcp_line(2, ("0.0.0.0", 22), ("0.0.0.0", 0), 0x0A, 777)]
    )
    assert _by_inode(collector.collect())[777].pid is None
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)
    collector.collect()
    collector.collect()
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)


def test_fake_socket_moves_to_child(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    assert _by_inode(collector.collect())[555].pid == 100
    fake.add_pid(200, start=80)  # forked child inherits fd 3
    fake.give_fd(200, 3, 555)
    assert _by_inode(collector.collect())[555].pid == 100  # shared: parent owns
    fake.take_fd(100, 3)  # parent closes its copy
    assert _by_inode(collector.collect())[555].pid == 200
    assert collector.fd_scans == 1  # new pid scan + one readlink, no full scan
    fake.remove_pid(200)  # last holder exits while the socket stays listed
    assert _by_inode(collector.collect())[555].pid is None
    # someone else must hold it: every pid is searched (nobody does)
    assert (collector.fd_scans, collector.targeted_scans) == (1, 1)


def test_fake_reused_pid_is_rescanned(fake: FakeProc) -> None:
    collector = LinuxProcCollector(str(fake.root))
    fake.add_pid(300, start=60)
    fake.give_fd(300, 9, 555)
    assert _by_inode(collector.collect())[555].pid == 100  # start 50 < 60
    # pid 100 exits; the pid is reused by a fork child of 300 that inherited
    # the socket on the same fd number: only the start time tells them apart.
    fake.set_start(100, 90)
    assert _by_inode(collector.collect())[555].pid == 300
    assert collector.fd_scans == 1


def test_fake_owner_rule_earliest_start_then_lowest_pid(fake: FakeProc) -> None:
    fake.add_pid(40, start=50)  # same start as 100, lower pid
    fake.give_fd(40, 7, 555)
    fake.add_pid(30, start=70)  # lower pid, later start
    fake.give_fd(30, 7, 555)
    collector = LinuxProcCollector(str(fake.root))
    for _ in range(3):
        assert _by_inode(collector.collect())[555].pid == 40


def test_fake_foreign_namespace_read_once_via_a_live_pid(fake: FakeProc) -> None:
    fake.add_pid(400, ns=2, start=10)
    fake.add_pid(401, ns=2, start=10)
    fake.set_sockets(2, [tcp_line(0, ("127.0.0.1", 8080), ("0.0.0.0", 0), 0x0A, 888)])
    fake.give_fd(401, 3, 888)
    collector = LinuxProcCollector(str(fake.root))
    records = collector.collect()
    assert [(r.net_namespace, r.pid) for r in records if r.socket == 888] == [(2, 401)]
    assert [r.net_namespace for r in records if r.socket == 555] == [1]
    # pid 400 is listed but its net files are gone (it exits mid-read):
    # another pid of the namespace serves, and nothing is lost or doubled.
    (fake.root / "400" / "net" / "tcp").unlink()
    records = collector.collect()
    assert [(r.net_namespace, r.pid) for r in records if r.socket == 888] == [(2, 401)]
    fake.remove_pid(400)
    fake.remove_pid(401)  # namespace without processes: not readable, skipped
    assert [r.socket for r in collector.collect()].count(888) == 0


def test_fake_periodic_full_scan(fake: FakeProc) -> None:
    now = [0.0]
    collector = LinuxProcCollector(str(fake.root), rescan_after=10.0, clock=lambda: now[0])
    collector.collect()
    now[0] = 5.0
    collector.collect()
    assert collector.fd_scans == 1
    now[0] = 10.0
    collector.collect()
    assert collector.fd_scans == 2


def test_fake_permission_denied_fd_dir_counts_and_gives_none(
    fake: FakeProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_listdir = os.listdir

    def listdir(path: str) -> list[str]:
        if str(path).endswith("/100/fd/"):
            raise PermissionError(13, "Permission denied", path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    collector = LinuxProcCollector(str(fake.root))
    assert _by_inode(collector.collect())[555].pid is None
    assert collector.access_denied_pids == 1


def test_fake_socket_owners_alone(fake: FakeProc) -> None:
    """The resolver's own contract: None after a full scan, else the changed inodes."""
    owners = SocketOwners(str(fake.root))
    listed = [SocketRecord(None, 2, 6, "0.0.0.0", 80, "", 0, "LISTEN", socket=555)]
    assert owners.update({100}, [], {555}) is None
    assert (owners.owner(555), owners.owner(999), owners.fd_scans) == (100, None, 1)
    assert owners.update({100}, listed, set()) == set()
    fake.add_pid(90, start=50)  # same start as pid 100: the lower pid wins
    fake.give_fd(90, 7, 555)
    assert owners.update({90, 100}, listed, set()) == {555}
    assert owners.owner(555) == 90
    fake.add_pid(300, start=10)  # earlier start wins over the lower pid
    fake.give_fd(300, 4, 555)
    assert owners.update({90, 100, 300}, listed, set()) == {555}
    assert owners.owner(555) == 300
    owners.update({90, 100, 300}, listed, {777})  # held by nobody
    assert (owners.owner(777), owners.targeted_scans) == (None, 1)
    listed.append(SocketRecord(None, 2, 6, "10.0.0.1", 81, "", 0, "LISTEN", socket=777))
    fake.remove_pid(300)
    assert owners.update({90, 100}, listed, set()) == {555}
    assert (owners.owner(555), owners.targeted_scans, owners.fd_scans) == (90, 1, 1)
    assert owners.pids_scanned == 6  # full scan 1, pid 90, pid 300, targeted 90/100/300


def test_fake_own_namespace_unreadable_is_collect_error(tmp_path: Path) -> None:
    with pytest.raises(CollectError):
        LinuxProcCollector(str(tmp_path)).collect()


def test_select_collector() -> None:
    assert isinstance(select_collector(), LinuxProcCollector)


def test_select_collector_falls_back_without_proc(tmp_path: Path) -> None:
    assert isinstance(select_collector(str(tmp_path)), PsutilCollector)


# ----------------------------------------------------------------- live


@pytest.fixture
def live_sockets() -> Iterator[list[socket.socket]]:
    """300 TCP pairs over 127.0.0.1 and ::1, listeners, UDP, a v4-mapped pair."""
    held = open_mixed_sockets(300)
    try:
        yield held
    finally:
        close_with_reset(held)


def _port_ends(sockets: list[socket.socket]) -> set[tuple[int, int, int]]:
    """(protocol, local port, remote port or 0) of each socket."""
    ends: set[tuple[int, int, int]] = set()
    for sock in sockets:
        protocol = 6 if sock.type == socket.SOCK_STREAM else 17
        try:
            remote = sock.getpeername()[1]
        except OSError:
            remote = 0
        ends.add((protocol, sock.getsockname()[1], remote))
    return ends


def test_live_differential_against_psutil(live_sockets: list[socket.socket]) -> None:
    # Our sockets by inode and namespace: on a busy host other processes and
    # other namespaces hold sockets on the same port numbers.
    inodes = socket_inodes(live_sockets)
    own_ns = own_net_namespace()
    ours_all = LinuxProcCollector().collect()
    mine = [r for r in ours_all if r.socket in inodes and r.net_namespace == own_ns]
    ours = {_key(r) for r in mine}
    # psutil gives no inode; it names the owner by finding the inode in
    # /proc/PID/fd, so our pid plus the sockets' ends select ours there.
    ends = _port_ends(live_sockets)
    theirs = {
        _key(r)
        for r in PsutilCollector().collect()
        if r.pid == ME and (r.protocol, r.local_port, r.remote_port) in ends
    }
    assert ours == theirs
    assert sorted(r.socket for r in mine) == sorted(inodes)  # each socket once
    assert len(ours) == len(live_sockets) == 600 + 2 + 3 + 4
    assert any(k[1] == 2 and k[4] == live_sockets[-5].getsockname()[1] for k in ours)  # v4-mapped
    assert all(k[0] == ME for k in ours)


def test_live_incremental_scans(live_sockets: list[socket.socket]) -> None:
    collector = LinuxProcCollector()
    collector.collect()
    for _ in range(5):  # other processes on the host may open sockets meanwhile
        collector.collect()
        before = collector.fd_scans
        collector.collect()
        if collector.fd_scans == before:
            break
    else:
        pytest.fail("every repeated collect() did a full fd scan")
    # A new socket of ours (a known holder) is found by a targeted scan. Other
    # processes may meanwhile open sockets that need a full scan: retry.
    for _ in range(5):
        scans = (collector.fd_scans, collector.targeted_scans)
        with socket.create_server(("127.0.0.1", 0)) as extra:
            port = extra.getsockname()[1]
            records = collector.collect()
            (record,) = [r for r in records if r.socket == socket_inode(extra)]
            assert (record.pid, record.local_port, record.state) == (ME, port, "LISTEN")
        if (collector.fd_scans, collector.targeted_scans) == (scans[0], scans[1] + 1):
            break
    else:
        pytest.fail("a new socket of ours always needed a full fd scan")


def _sleeper(pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=pass_fds
    )


def _listener_record(records: list[SocketRecord], inode: int) -> SocketRecord:
    """The record of the listener with ``inode`` (port numbers repeat on a busy host)."""
    (record,) = [r for r in records if r.socket == inode]
    assert record.state == "LISTEN"
    return record


def test_live_socket_moves_to_child() -> None:
    collector = LinuxProcCollector()
    listener = socket.create_server(("127.0.0.1", 0))
    inode = socket_inode(listener)
    assert _listener_record(collector.collect(), inode).pid == ME
    child = _sleeper((listener.fileno(),))
    try:
        listener.close()
        record = _listener_record(collector.collect(), inode)
        assert record.pid == child.pid
        assert _listener_record(collector.collect(), inode).pid == child.pid
    finally:
        child.kill()
        child.wait()
        listener.close()


def test_live_shared_listener_owned_by_parent() -> None:
    collector = LinuxProcCollector()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        inode = socket_inode(listener)
        children = [_sleeper((listener.fileno(),)) for _ in range(3)]
        try:
            for _ in range(3):
                assert _listener_record(collector.collect(), inode).pid == ME
            assert _listener_record(LinuxProcCollector().collect(), inode).pid == ME
        finally:
            for child in children:
                child.kill()
                child.wait()


@pytest.mark.netns
def test_live_other_network_namespace() -> None:
    name = f"tc-test-{secrets.token_hex(4)}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    if added.returncode != 0:
        pytest.skip(f"ip netns add failed: {added.stderr.decode(errors='replace').strip()}")
    proc: subprocess.Popen[bytes] | None = None
    try:
        up = subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            capture_output=True,
            check=False,
        )
        if up.returncode != 0:
            pytest.skip(f"ip netns exec failed: {up.stderr.decode(errors='replace').strip()}")
        port = 20000 + secrets.randbelow(20000)
        code = (
            "import os, socket, time\n"
            f"s = socket.create_server(('127.0.0.1', {port}))\n"
            "print('ready', os.fstat(s.fileno()).st_ino, flush=True)\n"
            "time.sleep(60)\n"
        )
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None
        ready, inode = proc.stdout.readline().split()
        assert ready == b"ready"
        their_ns = int(os.readlink(f"/proc/{proc.pid}/ns/net")[5:-1])
        assert their_ns != _own_ns()
        collector = LinuxProcCollector()
        for _ in range(2):
            records = collector.collect()
            # by inode: another namespace on a busy host may reuse the port;
            # exactly one record also shows their namespace was read once
            found = [r for r in records if r.socket == int(inode)]
            assert [(r.pid, r.net_namespace, r.local_address, r.local_port) for r in found] == [
                (proc.pid, their_ns, "127.0.0.1", port)
            ]
            assert found[0].state == "LISTEN"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def test_live_pid_none_for_time_wait() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
        ends = (*client.getsockname(), *client.getpeername())
        client.close()  # active close: the client side goes to TIME_WAIT
        accepted.close()
    own_ns = own_net_namespace()
    deadline = time.monotonic() + 5
    while True:
        # A TIME_WAIT entry has no inode and no owner: our namespace and the
        # 4-tuple, unique in it, find ours among a busy host's.
        records = [
            r
            for r in LinuxProcCollector().collect()
            if r.net_namespace == own_ns
            and r.protocol == 6
            and (r.local_address, r.local_port, r.remote_address, r.remote_port) == ends
        ]
        if any(r.state == "TIME_WAIT" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (record,) = [r for r in records if r.state == "TIME_WAIT"]
    assert record.pid is None and record.socket == 0
