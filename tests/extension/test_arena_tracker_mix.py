"""The arena and the rows waiting to be served follow the table through every path
that adds or removes rows: samples, kernel flow events (event-only rows, adopted
rows, rows closed by events), restarts (rows restored and revived), and queries of
both kinds, with chunks of a few rows."""

from __future__ import annotations

import os
from typing import Any
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extension.enrich import arena
from extension.enrich.connections import ConnectionTracker
from extension.model import FlowEvent, ProcessInfo, SocketRecord
from extension.serve.reply import EncodedRows
from tests.extension.test_wire_rows import grouped, served_in_arena, thrift_reply, without_tail

NS = 4026531840
STATES = ("ESTABLISHED", "SYN_SENT", "CLOSE_WAIT", "TIME_WAIT", "LISTEN", "CLOSE")
PROCESSES = {7: ProcessInfo(name="web", path="/usr/bin/web"), 8: ProcessInfo(name="db")}


def lookup(pid: int | None) -> ProcessInfo:
    return PROCESSES.get(pid or 0, ProcessInfo())


@st.composite
def sockets(draw: Any) -> SocketRecord:
    """A socket of a small space, so that keys, 5-tuples and inodes collide."""
    protocol = draw(st.sampled_from((6, 17)))
    remote_port = draw(st.sampled_from((0, 443, 53)))
    return SocketRecord(
        pid=draw(st.sampled_from((None, 7, 8))),
        family=2,
        protocol=protocol,
        local_address=draw(st.sampled_from(("10.0.0.5", "0.0.0.0"))),
        local_port=draw(st.sampled_from((80, 51000, 51001))),
        remote_address="203.0.113.9" if remote_port else "",
        remote_port=remote_port,
        state=draw(st.sampled_from(STATES)) if protocol == 6 else "",
        socket=draw(st.sampled_from((None, 0, 101, 102, 103))),
        net_namespace=draw(st.sampled_from((None, NS))),
    )


# Each sample's sockets, and whether it left TIME_WAIT sockets out.
samples = st.tuples(st.just("sample"), st.tuples(st.lists(sockets(), max_size=6), st.booleans()))
events = st.tuples(
    st.just("events"),
    st.lists(
        st.tuples(
            sockets(),
            st.sampled_from(("a", "b", "c")),
            st.sampled_from(("outbound", "inbound", "listening")),
            st.sampled_from(("connected", "", "refused")),
            st.booleans(),  # ended
        ),
        max_size=4,
    ),
)
# Kernel events read through a time (rows the sampler finds after it wait for them).
throughs = st.tuples(st.just("through"), st.sampled_from((None, -0.5, 0.0)))
queries = st.tuples(st.just("query"), st.booleans())
restarts = st.tuples(st.just("restart"), st.none())
steps = st.lists(
    st.tuples(
        st.one_of(samples, events, throughs, queries, restarts),
        st.sampled_from((0.3, 1.0, 2.5, 7.0)),
    ),
    min_size=1,
    max_size=25,
)


EXAMPLES = int(os.environ.get("MIX_EXAMPLES", "400"))
"""Examples per run (more for a longer search: MIX_EXAMPLES=20000)."""


def check_replies(tracker: ConnectionTracker, now: float, first: dict[Any, dict[str, str]],
                  step: int, sent: list[tuple[EncodedRows, bytes]]) -> None:  # fmt: skip
    full = EncodedRows(*tracker.encoded_rows(now))
    stable = EncodedRows(*tracker.encoded_rows(now, stable_only=True))
    # A reply is sent after the sampler's lock is let go, while the tracker
    # goes on: what it returned must not change afterwards.
    sent += [(full, full.reply(0)), (stable, stable.reply(0))]
    served = served_in_arena(tracker)
    rows = [conn.row() for conn in served]
    for conn, row in zip(served, rows, strict=True):
        assert without_tail(row) == first.setdefault(conn, without_tail(row))
        if (conn.last_seen < tracker._sample_second and conn.closed_at is None
                and conn.sampled and conn.missed_at is None):  # fmt: skip
            # An open row the last sample listed was seen at that sample.
            row["last_seen"] = str(tracker._sample_second)
    assert stable.row_count == full.row_count == len(served)
    assert stable.reply(step) == thrift_reply([without_tail(r) for r in rows], step)
    assert full.reply(step) == thrift_reply(grouped(rows, tracker._sample_second), step)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(1, 3))
def test_arena_and_waiting_rows_follow_samples_events_restarts_and_queries(
    plan: list[tuple[tuple[str, Any], float]], per_chunk: int
) -> None:
    def new_tracker() -> ConnectionTracker:
        return ConnectionTracker(lookup, attempt_grace_secs=0, linger_secs=4.0, max_lingering=6)

    tracker = new_tracker()
    first: dict[Any, dict[str, str]] = {}  # by row (kept alive: no id is reused)
    sent: list[tuple[EncodedRows, bytes]] = []
    now = 1000.0
    with patch.object(arena, "ROWS_PER_CHUNK", per_chunk):
        for step, ((kind, arg), gap) in enumerate(plan):
            now += gap
            if kind == "sample":
                # One socket per inode (a listing never shows an inode twice).
                records, time_wait_left_out = arg
                listed = {(r.net_namespace, r.socket or id(r)): r for r in records}
                if time_wait_left_out:
                    listed = {k: r for k, r in listed.items() if r.state != "TIME_WAIT"}
                tracker.update(list(listed.values()), now=now, started=now - 0.1,
                               time_wait_unlisted=NS if time_wait_left_out else None)  # fmt: skip
            elif kind == "events":
                flows = []
                for record, key, direction, status, ended in arg:
                    flows.append(FlowEvent(("tcp", key), record, PROCESSES.get(record.pid or 0),
                                           direction, status, now - 0.2,
                                           now - 0.1 if ended else None))  # fmt: skip
                tracker.observe(flows, now=now)
            elif kind == "through":
                tracker.events_through = None if arg is None else now + arg
            elif kind == "query":
                check_replies(tracker, now, first, step, sent)
            else:
                saved = tracker.saved_rows()
                assert [s.row for s in saved] == [
                    without_tail(c.row()) for c in tracker._connections.values() if c.served
                ]
                tracker = new_tracker()
                tracker.restore(saved, now=now)
                first.clear()
            served_in_arena(tracker)
            tracker.saved_rows()  # every served row is in the arena
        check_replies(tracker, now + 0.5, first, len(plan), sent)
    for reply, as_sent in sent:
        assert reply.reply(0) == as_sent
