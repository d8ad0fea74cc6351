"""A socket one kernel listing skips is not a close, and one listed twice is one row.

Under churn, a ``/proc/net/tcp`` read or a sock_diag dump walks hash chains
while sockets move between them, so a listing can skip a socket or list it
twice. A sampled row closes only on evidence: a kernel close event, its
socket's ownerless remnant (the kernel's TIME_WAIT or orphan of a closed
socket), or absence from two samples in a row.
"""

from __future__ import annotations

from dataclasses import replace

from extension.columns import STABLE_COLUMNS
from extension.enrich.connections import ConnectionTracker
from extension.model import FlowEvent, ProcessInfo, SocketRecord

NS = 4026531840
CURL = ProcessInfo(name="curl", path="/usr/bin/curl", uid=1000, username="alice", parent=1)
A = SocketRecord(4242, 2, 6, "10.0.0.5", 51000, "203.0.113.9", 443, "ESTABLISHED", 777, NS)
B = replace(A, local_port=51001, socket=778)


def lookups(pid: int | None) -> ProcessInfo:
    return CURL if pid == 4242 else ProcessInfo()


def stable_rows(tracker: ConnectionTracker, now: float) -> set[tuple[tuple[str, str], ...]]:
    """What a differential query compares: the selected (stable) columns of each row."""
    return {
        tuple(sorted((k, v) for k, v in row.items() if k in STABLE_COLUMNS))
        for row in tracker.rows(now)
    }


def test_a_socket_one_listing_skips_is_neither_removed_nor_added_again() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A, B], now=100.0)
    before = stable_rows(tracker, 100.1)
    tracker.update([replace(B)], now=101.25)  # A skipped by this dump
    during = stable_rows(tracker, 101.3)
    tracker.update([replace(A), replace(B)], now=102.5)  # and listed again
    after = stable_rows(tracker, 102.6)
    assert len(before) == 2 and before == during == after
    assert tracker.lingering == 0 and tracker.tracked == 2


def test_a_socket_absent_from_two_samples_in_a_row_has_closed() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A], now=100.0)
    (row,) = tracker.rows(100.1)
    tracker.update([], now=100.25)
    assert tracker.lingering == 0, "one listing without it is no evidence"
    tracker.update([], now=100.5)
    assert tracker.lingering == 1
    (closed,) = tracker.rows(100.6)
    assert {k: closed[k] for k in STABLE_COLUMNS if k in closed} == {
        k: row[k] for k in STABLE_COLUMNS if k in row
    }
    assert closed["last_seen"] == "100", "last listed at 100"
    tracker.update([], now=106.6)
    assert tracker.rows(106.7) == []


def test_its_ownerless_remnant_closes_a_row_at_once() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A], now=100.0)
    tracker.rows(100.1)
    remnant = replace(A, pid=None, socket=0, state="TIME_WAIT")
    tracker.update([remnant], now=100.25)
    assert tracker.lingering == 1, "the remnant is evidence that the socket was closed"
    (row,) = tracker.rows(100.3)
    assert row["pid"] == "4242", "and the remnant is no row of its own"


def test_a_kernel_close_event_closes_a_sampled_row_at_once() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A], now=100.0)
    tracker.rows(100.1)
    ended = FlowEvent(("tcp", 1), replace(A, state="CLOSE"), CURL, "outbound", "connected",
                      100.0, 100.2)  # fmt: skip
    tracker.observe([ended], now=100.25)
    assert tracker.lingering == 1


def test_a_flow_row_one_listing_skips_is_not_closed() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    flow = FlowEvent(("tcp", 1), A, CURL, "outbound", "connected", 100.0)
    tracker.observe([flow], now=100.05)
    tracker.update([B], now=100.5, started=100.4)  # A's socket skipped
    tracker.update([replace(A), B], now=100.75, started=100.7)
    assert tracker.lingering == 0
    assert sorted(r["socket"] for r in tracker.rows(100.8)) == ["777", "778"]


def test_an_event_row_without_inode_one_listing_skips_is_not_closed() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    no_inode = replace(A, socket=None)
    tracker.observe([FlowEvent(("tcp", 1), no_inode, CURL, "outbound", "connected", 100.0)],
                    now=100.05)  # fmt: skip
    tracker.update([], now=100.5, started=100.4)  # its socket skipped
    tracker.update([A], now=100.75, started=100.7)
    assert tracker.lingering == 0
    (row,) = tracker.rows(100.8)
    assert row["socket"] == "777" and row["first_seen"] == "100"


def test_a_socket_listed_twice_in_one_listing_is_one_row() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A, replace(A), B], now=100.0)
    assert sorted(r["socket"] for r in tracker.rows(100.1)) == ["777", "778"]
    tracker.update([replace(A), B, replace(B)], now=100.25)
    tracker.update([replace(A), replace(A), B], now=100.5)
    assert sorted(r["socket"] for r in tracker.rows(100.6)) == ["777", "778"]
    assert tracker.lingering == 0 and tracker.tracked == 2


# ---------------------------------------------------------------- linger
# A closed row leaves linger_secs after it closed once a query has shown it;
# nothing else holds it longer.


def test_a_shown_row_leaves_on_time_behind_a_closed_row_not_shown_yet() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.events_through = 100.05
    tracker.update([B], now=100.0)
    tracker.rows(100.1)  # B shown
    # A sample finds A while the event reader is stalled (A waits for its
    # events), and A closes before they come: A heads the closed queue.
    tracker.update([B, A], now=101.0)
    tracker.update([B], now=101.5)
    tracker.update([B], now=102.0)
    tracker.update([], now=102.5)
    tracker.update([], now=103.0)  # B closes after A
    tracker.rows(103.1)
    tracker.update([], now=109.5)
    sockets = [r.get("socket") for r in tracker.rows(109.6)]
    assert "778" not in sockets, "B closed 6.5 s ago and was shown: gone, whatever A waits for"


def test_a_row_waiting_for_stalled_kernel_events_is_served_within_seconds() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.events_through = 99.0  # the event reader stopped advancing
    tracker.update([A], now=100.0)
    assert tracker.rows(100.1) == [], "held while its events may still come"
    tracker.update([A], now=103.0)
    (row,) = tracker.rows(103.1)
    assert row["socket"] == "777" and row["pid"] == "4242"


def test_a_time_wait_remnant_listed_after_the_close_does_not_reopen_the_row() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([A], now=100.0)
    tracker.rows(100.1)
    tracker.update([], now=100.5)
    tracker.update([], now=101.0)  # closed
    remnant = replace(A, pid=None, socket=0, state="TIME_WAIT")
    for k in range(1, 12):
        tracker.update([remnant] if k % 4 == 0 else [], now=101.0 + k)
        tracker.rows(101.1 + k)
    assert tracker.rows(112.2) == [] and tracker.tracked == 0


def test_a_time_wait_remnant_closes_an_event_row_rather_than_keeping_it_open() -> None:
    # The flow's close event is lost (a full ring) or not merged yet when a
    # sample lists the remnant of its socket.
    tracker = ConnectionTracker(lookups, linger_secs=6)
    no_inode = replace(A, socket=None)
    tracker.observe([FlowEvent(("tcp", 1), no_inode, CURL, "outbound", "connected", 100.0)],
                    now=100.05)  # fmt: skip
    remnant = replace(A, pid=None, socket=0, state="TIME_WAIT")
    tracker.update([remnant], now=100.5, started=100.4)
    (row,) = tracker.rows(100.6)
    assert row["pid"] == "4242" and tracker.lingering == 1, "closed: its socket is a remnant"
    for k in range(1, 8):  # samples that leave TIME_WAIT out, as the sampler's do
        tracker.update([], now=100.5 + k, started=100.4 + k, time_wait_unlisted=NS)
        tracker.rows(100.6 + k)
    assert tracker.rows(107.7) == [], "gone linger_secs after its close"



def test_a_time_wait_row_closes_at_the_first_listing_of_time_wait_without_it() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    remnant = replace(A, pid=None, socket=0, state="TIME_WAIT")  # no row known before it
    tracker.update([remnant], now=100.0)
    tracker.rows(100.1)
    tracker.update([], now=101.0, time_wait_unlisted=NS)
    assert tracker.lingering == 0, "a sample without TIME_WAIT says nothing about it"
    tracker.update([], now=102.0)
    assert tracker.lingering == 1
    tracker.rows(102.1)
    tracker.update([], now=108.5)
    assert tracker.rows(108.6) == []
