"""ConnectionTracker on recorded samples: identity, stability, linger, bounds."""

from __future__ import annotations

from dataclasses import replace

from extension.columns import STABLE_COLUMNS
from extension.enrich.connections import ConnectionTracker
from extension.model import ProcessInfo, SocketRecord

CURL = ProcessInfo(name="curl", path="/usr/bin/curl", cmdline="curl http://x", uid=1000,
                   username="alice", parent=10, start_time=1_700_000_000)  # fmt: skip
NGINX = ProcessInfo(name="nginx", path="/usr/sbin/nginx", uid=0, username="root", parent=1)

ESTABLISHED = SocketRecord(
    pid=4242, family=2, protocol=6, local_address="10.0.0.5", local_port=51000,
    remote_address="203.0.113.9", remote_port=443, state="ESTABLISHED",
    socket=777, net_namespace=4026531840,
)  # fmt: skip
TIME_WAIT = replace(ESTABLISHED, pid=None, socket=0, state="TIME_WAIT")


class Lookups:
    """Records lookups and answers from a script: pid -> list of answers."""

    def __init__(self, answers: dict[int, list[ProcessInfo]]) -> None:
        self.answers = answers
        self.calls: list[int | None] = []

    def __call__(self, pid: int | None) -> ProcessInfo:
        self.calls.append(pid)
        if pid is None or pid not in self.answers:
            return ProcessInfo()
        queue = self.answers[pid]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def stable(row: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if k in STABLE_COLUMNS}


def test_row_is_stable_through_state_changes_and_time_wait() -> None:
    lookups = Lookups({4242: [CURL, NGINX]})  # a second lookup would answer nginx
    # No grace: the attempt is served while still in SYN_SENT.
    tracker = ConnectionTracker(lookups, linger_secs=6, attempt_grace_secs=0)
    syn = replace(ESTABLISHED, state="SYN_SENT")
    tracker.update([syn], now=100.0)
    first = tracker.rows()
    tracker.update([ESTABLISHED], now=100.5)
    middle = tracker.rows()
    tracker.update([TIME_WAIT], now=101.0)  # closed: owner and inode gone
    closing = tracker.rows()
    tracker.update([TIME_WAIT], now=110.0)  # linger over; TIME_WAIT still there
    assert len(first) == len(middle) == len(closing) == 1
    assert stable(first[0]) == stable(middle[0]) == stable(closing[0])
    assert middle[0]["state"] == "ESTABLISHED"
    assert closing[0]["pid"] == "4242" and closing[0]["name"] == "curl"
    assert closing[0]["socket"] == "777"
    assert tracker.lingering == 0
    assert tracker.rows() == [], "a known connection's TIME_WAIT is not a new row"
    assert lookups.calls == [4242]


def test_closed_connection_lingers_then_expires() -> None:
    tracker = ConnectionTracker(Lookups({4242: [CURL]}), linger_secs=6)
    tracker.update([ESTABLISHED], now=100.0)
    tracker.update([], now=100.25)
    tracker.update([], now=100.5)  # absent from two samples in a row: closed
    assert tracker.lingering == 1
    assert [r["pid"] for r in tracker.rows()] == ["4242"]
    tracker.update([], now=106.25)
    assert tracker.tracked == 1
    tracker.update([], now=106.75)
    assert tracker.rows() == []


def test_port_reuse_gives_two_rows_by_inode() -> None:
    tracker = ConnectionTracker(Lookups({4242: [CURL]}), linger_secs=6)
    tracker.update([ESTABLISHED], now=100.0)
    tracker.update([replace(ESTABLISHED, socket=778)], now=101.0)
    rows = tracker.rows()
    assert sorted(r["socket"] for r in rows) == ["777", "778"]
    assert len({tuple(sorted(stable(r).items())) for r in rows}) == 2


def test_port_reuse_without_inode_is_told_apart_by_first_seen() -> None:
    no_inode = replace(ESTABLISHED, socket=None, net_namespace=None)
    tracker = ConnectionTracker(Lookups({4242: [CURL]}), linger_secs=6)
    tracker.update([no_inode], now=100.0)
    tracker.update([], now=101.0)
    tracker.update([], now=101.5)
    tracker.update([no_inode], now=102.0)
    rows = tracker.rows()
    assert sorted(r["first_seen"] for r in rows) == ["100", "102"]


def test_reused_pid_does_not_relabel_an_older_connection() -> None:
    # The first lookup of pid 4242 is curl; a later process with that pid is nginx.
    lookups = Lookups({4242: [CURL, NGINX]})
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([ESTABLISHED], now=100.0)
    tracker.rows()
    newer = replace(ESTABLISHED, socket=900, local_port=51001)
    tracker.update([ESTABLISHED, newer], now=101.0)
    names = {r["socket"]: r["name"] for r in tracker.rows()}
    assert names == {"777": "curl", "900": "nginx"}


def test_owner_learned_before_first_serve_is_used() -> None:
    tracker = ConnectionTracker(Lookups({4242: [CURL]}), linger_secs=6)
    tracker.update([replace(ESTABLISHED, pid=None)], now=100.0)
    tracker.update([ESTABLISHED], now=100.25)
    (row,) = tracker.rows()
    assert row["pid"] == "4242" and row["name"] == "curl"


def test_owner_lookup_failing_later_keeps_the_row() -> None:
    tracker = ConnectionTracker(Lookups({4242: [CURL]}), linger_secs=6)
    tracker.update([ESTABLISHED], now=100.0)
    (before,) = tracker.rows()
    tracker.update([replace(ESTABLISHED, pid=None)], now=100.5)  # owner unresolved now
    (after,) = tracker.rows()
    assert stable(before) == stable(after)


def test_unknown_time_wait_is_its_own_row_without_process() -> None:
    tracker = ConnectionTracker(Lookups({}), linger_secs=6)
    tracker.update([TIME_WAIT], now=100.0)
    (row,) = tracker.rows()
    assert "pid" not in row and "name" not in row and "socket" not in row
    assert row["remote_address"] == "203.0.113.9"
    assert row["state"] == "TIME_WAIT"


def test_lingering_connections_are_bounded() -> None:
    tracker = ConnectionTracker(Lookups({}), linger_secs=600, max_lingering=100)
    for i in range(1000):
        tracker.update([replace(ESTABLISHED, socket=10_000 + i)], now=100.0 + i)
    # Each socket closes when two samples in a row leave it out.
    assert tracker.tracked == 102
    assert tracker.lingering == 100
    assert tracker.evicted == 898
    kept = sorted(int(r["socket"]) for r in tracker.rows())
    assert kept[0] == 10_898 and kept[-1] == 10_999


def test_udp_row_has_empty_state() -> None:
    udp = replace(ESTABLISHED, protocol=17, state="", remote_address="", remote_port=0)
    tracker = ConnectionTracker(Lookups({}), linger_secs=6)
    tracker.update([udp], now=100.0)
    (row,) = tracker.rows()
    assert row["state"] == "" and row["direction"] == "listening"
