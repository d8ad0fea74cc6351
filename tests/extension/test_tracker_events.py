"""ConnectionTracker with flow events beside samples: one row per connection, held
until what it says is settled, owners from evidence."""

from __future__ import annotations

from dataclasses import replace

from extension.columns import STABLE_COLUMNS
from extension.enrich.connections import ConnectionTracker
from extension.model import FlowEvent, ProcessInfo, SocketRecord

NS = 4026531840
CURL = ProcessInfo(name="curl", path="/usr/bin/curl", cmdline="curl http://x", uid=1000,
                   username="alice", parent=10, start_time=1_700_000_000)  # fmt: skip
NGINX = ProcessInfo(name="nginx", path="/usr/sbin/nginx", uid=0, username="root", parent=1)
OTHER = ProcessInfo(name="other", path="/usr/bin/other", uid=0, username="root", parent=1)

OUT = SocketRecord(
    pid=4242, family=2, protocol=6, local_address="10.0.0.5", local_port=51000,
    remote_address="203.0.113.9", remote_port=443, state="ESTABLISHED",
    socket=None, net_namespace=NS,
)  # fmt: skip
LISTENER = SocketRecord(
    pid=80, family=2, protocol=6, local_address="0.0.0.0", local_port=8080,
    remote_address="", remote_port=0, state="LISTEN", socket=900, net_namespace=NS,
)  # fmt: skip


def lookups(pid: int | None) -> ProcessInfo:
    return {4242: CURL, 80: NGINX, 81: OTHER}.get(pid or 0, ProcessInfo())


def event(record: SocketRecord, *, key: str = "a", direction: str = "outbound",
          status: str = "connected", started: float = 100.0, ended: float | None = None,
          process: ProcessInfo | None = CURL) -> FlowEvent:  # fmt: skip
    return FlowEvent(("tcp", key), record, process, direction, status, started, ended)


def stable(row: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in row.items() if k in STABLE_COLUMNS}


def test_a_one_millisecond_connection_is_one_row_with_its_owner() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(replace(OUT, state="CLOSE"), ended=100.001)], now=100.05)
    (row,) = tracker.rows(100.1)
    assert (row["pid"], row["name"], row["status"], row["direction"]) == (
        "4242", "curl", "connected", "outbound",
    )  # fmt: skip
    assert row["first_seen"] == "100" and "socket" not in row
    tracker.update([], now=106.2)
    assert tracker.rows(106.2) == [], "gone once linger_secs have passed since it closed"


def test_an_open_flow_without_inode_waits_for_a_sample_which_gives_it_one() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(OUT)], now=100.05)
    assert tracker.rows(100.1) == [], "held: a sample may still find its socket"
    sampled = replace(OUT, socket=777)
    tracker.update([sampled], now=100.5, started=100.4)
    (row,) = tracker.rows(100.6)
    assert row["socket"] == "777" and row["pid"] == "4242" and row["name"] == "curl"
    tracker.update([], now=101.0, started=100.9)
    tracker.update([], now=101.5, started=101.4)
    assert tracker.lingering == 1, "the sampler follows it now and saw it go"


def test_an_open_flow_the_sample_does_not_list_has_closed() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(OUT)], now=100.05)
    tracker.update([], now=100.5, started=100.4)
    assert tracker.rows(100.6) == [], "one listing may skip a socket: held for the next"
    tracker.update([], now=101.0, started=100.9)
    (row,) = tracker.rows(101.1)
    assert row["status"] == "connected" and tracker.lingering == 1


def test_a_flow_that_began_after_the_listing_is_not_closed_by_it() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(OUT, started=100.45)], now=100.5)
    tracker.update([], now=100.5, started=100.4)
    assert tracker.lingering == 0 and tracker.rows(100.6) == []


def test_a_flow_with_its_inode_that_began_after_the_listing_is_not_closed_by_it() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    with_inode = replace(OUT, socket=777)
    tracker.observe([event(with_inode, started=100.45)], now=100.5)
    tracker.update([], now=100.5, started=100.4)
    assert tracker.lingering == 0
    tracker.update([with_inode], now=100.75, started=100.7)
    (row,) = tracker.rows(100.8)
    assert row["socket"] == "777" and tracker.lingering == 0


def test_an_event_for_a_connection_the_sampler_already_has_adds_no_row() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    sampled = replace(OUT, socket=777)
    tracker.update([sampled], now=100.0)
    tracker.observe([event(OUT)], now=100.1)  # same 5-tuple, no inode
    (row,) = tracker.rows(100.2)
    assert row["socket"] == "777" and row["direction"] == "outbound"


def test_event_direction_beats_the_listener_port_guess_before_serving() -> None:
    # A socket sharing a listener's port (SO_REUSEPORT) that connected out.
    tracker = ConnectionTracker(lookups, linger_secs=6)
    out = replace(OUT, local_port=8080, socket=778)
    tracker.update([LISTENER, out], now=100.0)
    tracker.observe([event(replace(out, socket=None))], now=100.1)
    rows = {r["local_port"] + r.get("remote_port", ""): r for r in tracker.rows(100.2)}
    assert rows["8080443"]["direction"] == "outbound"


def test_an_attempt_waits_for_its_outcome_then_says_timed_out() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6, attempt_grace_secs=3)
    syn = replace(OUT, state="SYN_SENT", socket=779)
    tracker.update([syn], now=100.0)
    assert tracker.rows(101.0) == [], "no outcome yet"
    tracker.update([syn], now=103.1)
    (row,) = tracker.rows(103.1)
    assert row["status"] == "timed_out" and row["state"] == "SYN_SENT"


def test_an_attempt_refused_while_held_is_served_as_refused() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6, attempt_grace_secs=3)
    syn = replace(OUT, state="SYN_SENT", socket=779)
    tracker.update([syn], now=100.0)
    tracker.observe(
        [event(replace(OUT, state="CLOSE"), status="refused", ended=100.2)], now=100.3
    )
    (row,) = tracker.rows(100.4)
    assert row["status"] == "refused" and row["socket"] == "779"


def test_inbound_without_a_task_is_owned_by_its_listener_owner() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.update([LISTENER], now=100.0)
    inbound = replace(OUT, pid=None, local_address="10.0.0.5", local_port=8080,
                      remote_port=40000, state="CLOSE", net_namespace=None)  # fmt: skip
    tracker.observe(
        [event(inbound, direction="inbound", process=None, ended=100.2)], now=100.3
    )
    rows = [r for r in tracker.rows(100.4) if r.get("direction") == "inbound"]
    assert [(r["pid"], r["name"], r["net_namespace"]) for r in rows] == [("80", "nginx", str(NS))]


def test_inbound_with_two_listening_owners_stays_unknown_rather_than_guessed() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    second = replace(LISTENER, pid=81, socket=901)  # SO_REUSEPORT group of two processes
    tracker.update([LISTENER, second], now=100.0)
    inbound = replace(OUT, pid=None, local_port=8080, remote_port=40000, state="CLOSE")
    tracker.observe(
        [event(inbound, direction="inbound", process=None, ended=100.2)], now=100.3
    )
    (row,) = [r for r in tracker.rows(100.4) if r.get("direction") == "inbound"]
    assert "pid" not in row and "name" not in row


def test_inbound_closed_by_a_task_is_owned_by_that_task() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    second = replace(LISTENER, pid=81, socket=901)
    tracker.update([LISTENER, second], now=100.0)
    inbound = replace(OUT, pid=None, local_port=8080, remote_port=40000, state="ESTABLISHED",
                      net_namespace=None)  # fmt: skip
    tracker.observe([event(inbound, direction="inbound", process=None)], now=100.1)
    closed = replace(inbound, pid=81, state="CLOSE", net_namespace=NS)
    tracker.observe(
        [event(closed, direction="inbound", process=OTHER, ended=100.2)], now=100.3
    )
    (row,) = [r for r in tracker.rows(100.4) if r.get("direction") == "inbound"]
    assert (row["pid"], row["name"]) == ("81", "other")


def test_time_wait_remnant_of_an_event_only_connection_is_no_new_row() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(replace(OUT, state="CLOSE"), ended=100.001)], now=100.05)
    remnant = replace(OUT, pid=None, socket=0, state="TIME_WAIT")
    tracker.update([remnant], now=100.5, started=100.4)
    assert len(tracker.rows(100.6)) == 1


def test_stable_columns_do_not_change_once_served() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    sampled = replace(OUT, socket=777)
    tracker.observe([event(sampled)], now=100.0)
    (first,) = tracker.rows(100.1)
    tracker.observe([event(replace(sampled, state="CLOSE"), status="refused", ended=100.5,
                           process=OTHER)], now=100.6)  # fmt: skip
    (later,) = tracker.rows(100.7)
    assert stable(first) == stable(later) and later["state"] == "CLOSE"


def test_udp_flows_from_an_unconnected_socket_stay_while_it_is_open() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    flow = SocketRecord(4242, 2, 17, "10.0.0.5", 53000, "203.0.113.53", 53, "", None, NS)
    sender = SocketRecord(4242, 2, 17, "0.0.0.0", 53000, "", 0, "", 990, NS)
    tracker.observe([FlowEvent(("udp", 1), flow, CURL, "outbound", "", 100.0)], now=100.05)
    tracker.update([sender], now=100.5, started=100.4)
    rows = {r["remote_port"]: r for r in tracker.rows(100.6)}
    assert rows["53"]["status"] == "" and rows["53"]["direction"] == "outbound"
    assert rows["0"]["direction"] == "", "an unconnected socket that sends is not listening"
    tracker.update([], now=101.0, started=100.9)
    tracker.update([], now=101.5, started=101.4)
    assert tracker.lingering == 2, "the flow ends with its socket"


def test_memory_stays_bounded_under_a_flood_of_flows() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6, max_lingering=100)
    events = [
        event(replace(OUT, local_port=1024 + i, state="CLOSE"), key=str(i), ended=100.0)
        for i in range(1000)
    ]
    tracker.observe(events, now=100.1)
    assert tracker.tracked == 100 and tracker.evicted == 900


def test_a_closed_row_no_query_has_shown_waits_for_one() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(replace(OUT, state="CLOSE"), ended=100.0)], now=100.05)
    tracker.update([], now=108.0)  # linger is over, but osqueryd has not asked since
    (row,) = tracker.rows(108.1)
    assert row["pid"] == "4242"
    tracker.update([], now=108.2)
    assert tracker.rows(108.3) == [], "shown once, then gone"
    assert tracker.evicted == 0


def test_a_row_no_query_ever_shows_is_dropped_after_a_minute_and_counted() -> None:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    tracker.observe([event(replace(OUT, state="CLOSE"), ended=100.0)], now=100.05)
    tracker.update([], now=161.0)
    assert tracker.tracked == 0 and tracker.evicted == 1
