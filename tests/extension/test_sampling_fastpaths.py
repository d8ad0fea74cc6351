"""Sampling fast paths equal their references (hypothesis), on fake /proc trees and records."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.collect import owners
from extension.collect.linux_proc import LinuxProcCollector
from extension.enrich.connections import (
    ConnectionTracker,
    TrackedConnection,
    _Key,
    _key,
    _ownerless,
    _tuple5,
)
from extension.enrich.flow import direction_of, listening_endpoints
from extension.model import ProcessInfo, SocketRecord
from extension.sampler import TIME_WAIT_EVERY
from tests.extension.test_linux_proc import FakeProc, tcp_line

HOLDERS = (200, 300, 400)


@st.composite
def holdings(draw: st.DrawFn) -> tuple[list[set[int]], list[tuple[int, int]]]:
    """Who holds each socket, and which (socket index, pid) copies are closed later.

    Every socket keeps one holder (a socket no process holds is gone).
    """
    held = [
        draw(st.sets(st.sampled_from(HOLDERS), min_size=1))
        for _ in range(draw(st.integers(1, 14)))
    ]
    kept = [draw(st.sampled_from(sorted(pids))) for pids in held]
    copies = [(i, pid) for i, pids in enumerate(held) for pid in sorted(pids) if pid != kept[i]]
    closed = draw(st.lists(st.sampled_from(copies), unique=True)) if copies else []
    return held, closed


@settings(max_examples=40, deadline=None)
@given(holdings(), st.integers(1, 3), st.integers(1, 4))
def test_shared_owners_verified_in_slices_end_as_a_full_scan_finds_them(
    case: tuple[list[set[int]], list[tuple[int, int]]], slice_: int, rounds: int
) -> None:
    held, closed = case
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as tmp:
        patch.setattr(owners, "SHARED_SLICE", slice_)
        patch.setattr(owners, "SHARED_ROUNDS", rounds)
        fake = FakeProc(Path(tmp))
        fake.add_pid(100, start=10)
        fake.set_self(100)
        for pid, start in zip(HOLDERS, (60, 70, 70), strict=True):
            fake.add_pid(pid, start=start)
        lines = []
        for i, pids in enumerate(held):
            inode = 1000 + i
            lines.append(tcp_line(i, ("10.0.0.1", 2000 + i), ("10.0.0.9", 80), 0x01, inode))
            for pid in pids:
                fake.give_fd(pid, 3 + i, inode)
        fake.set_sockets(1, lines)
        sliced = LinuxProcCollector(str(fake.root), rescan_after=None)
        sliced.collect()
        for i, pid in closed:
            fake.take_fd(pid, 3 + i)
        for _ in range(2 * rounds + 1):
            got = {r.socket: r.pid for r in sliced.collect()}
        reference = {r.socket: r.pid for r in LinuxProcCollector(str(fake.root)).collect()}
        assert got == reference


NS = 4026531840


@st.composite
def timelines(draw: st.DrawFn) -> list[list[SocketRecord]]:
    """Samples of established sockets, some ending in a TIME_WAIT remnant, and
    ownerless TIME_WAIT sockets, which last at least TIME_WAIT_EVERY samples
    (the kernel keeps them 60 s)."""
    length = draw(st.integers(1, 4 * TIME_WAIT_EVERY))
    samples: list[list[SocketRecord]] = [[] for _ in range(length)]
    for i in range(draw(st.integers(0, 8))):
        est = SocketRecord(1000 + i % 3, 2, 6, "10.0.0.1", 30000 + i, "10.0.0.9", 443,
                           "ESTABLISHED", 5000 + i, NS)  # fmt: skip
        time_wait = replace(est, pid=None, socket=0, state="TIME_WAIT")
        start = draw(st.integers(0, length - 1))
        end = draw(st.integers(start, length))
        remnant = draw(st.booleans())
        for k in range(start, end):
            samples[k].append(est)
        if draw(st.booleans()):  # a TIME_WAIT remnant, of it or of one never sampled
            first = end if remnant else draw(st.integers(0, length - 1))
            last = min(length, first + draw(st.integers(TIME_WAIT_EVERY, 3 * TIME_WAIT_EVERY)))
            if not remnant:
                time_wait = replace(time_wait, local_port=40000 + i)
            for k in range(first, last):
                samples[k].append(time_wait)
    return samples


def _served(
    tracker: ConnectionTracker, now: float, changing: tuple[str, ...] = ("first_seen",)
) -> set[tuple[tuple[str, str], ...]]:
    changing = (*changing, "last_seen", "state")
    return {
        tuple(sorted((k, v) for k, v in row.items() if k not in changing))
        for row in tracker.rows(now)
    }


@settings(max_examples=150, deadline=None)
@given(timelines())
def test_time_wait_read_every_few_samples_serves_the_rows_of_reading_every_sample(
    samples: list[list[SocketRecord]],
) -> None:
    every = ConnectionTracker(lambda pid: ProcessInfo(name=f"p{pid}"))
    sparse = ConnectionTracker(lambda pid: ProcessInfo(name=f"p{pid}"))
    rows: set[tuple[tuple[str, str], ...]] = set()
    connections: set[tuple[tuple[str, str], ...]] = set()
    for k, sample in enumerate(samples):
        now = 1000.0 + k * 0.25
        every.update(sample, now)
        if k % TIME_WAIT_EVERY == 0:
            sparse.update(sample, now)
            assert _served(sparse, now) == _served(every, now)
            rows |= _served(sparse, now, changing=())
            connections |= _served(sparse, now)
        else:
            listed = [r for r in sample if r.state != "TIME_WAIT"]
            sparse.update(listed, now, time_wait_unlisted=NS)
    assert len(rows) == len(connections), "a connection's row was made again"


class ReferenceTracker(ConnectionTracker):
    """The tracker with the simple merge: every record keyed and looked at, every sample."""

    def update(
        self,
        records: Iterable[SocketRecord],
        now: float,
        started: float | None = None,
        *,
        time_wait_unlisted: int | None = None,
    ) -> None:
        records = list(records)
        second = int(now)
        self._now = max(self._now, now)
        current: dict[_Key, SocketRecord] = {}
        for record in records:
            current.setdefault(_key(record), record)
        listed = set(current)
        if self._unsampled:
            self._adopt(current, now if started is None else started)
        for key, conn in self._connections.items():
            if conn.closed_at is not None or not conn.sampled:
                continue
            seen = current.pop(key, None)
            if seen is None:
                if conn.state == "TIME_WAIT" and conn.record.net_namespace == time_wait_unlisted:
                    continue
                if conn.missed_at is None and conn.state != "TIME_WAIT" and (
                    ("tuple", None, *_tuple5(conn.record)) not in listed
                ):
                    conn.missed_at = now  # one listing may skip a socket
                    continue
                self._close(conn, now)
                continue
            conn.missed_at = None
            conn.last_seen = second
            conn.state = seen.state
            if not conn.served and conn.record.pid is None and seen.pid is not None:
                conn.record = seen
                conn.process = self._lookup(seen.pid)
        if self._unsampled:
            self._reconcile(records, now, now if started is None else started)
        listeners = listening_endpoints(records)
        for key, record in current.items():
            if _ownerless(record):
                tuple5 = _tuple5(record)
                if tuple5 in self._tombstones or (None, *tuple5[1:]) in self._tombstones:
                    continue
            direction = direction_of(record, listeners, self._holders)
            if direction == "listening" and record.protocol == 17 and self._sent_from(record):
                direction = ""
            conn = TrackedConnection(
                record=record, process=self._lookup(record.pid), direction=direction,
                first_seen=second, last_seen=second, state=record.state, born=now, began=now,
            )  # fmt: skip
            self._place(key, conn)
        self._expire(now)


@st.composite
def churn(draw: st.DrawFn) -> tuple[list[list[SocketRecord]], list[bool]]:
    """Samples of a pool of sockets: each listed or not, its record kept (the same
    object) or changed (state, owner learnt); listeners that share a key (a
    pid's SO_REUSEPORT group where sockets have no inode); and whether osqueryd
    asks for the rows after each sample."""
    pool: list[SocketRecord] = []
    for i in range(draw(st.integers(1, 10))):
        protocol = draw(st.sampled_from((6, 17)))
        listening = draw(st.booleans())
        pool.append(SocketRecord(
            draw(st.sampled_from((None, 700, 701))), 2, protocol, "10.0.0.1",
            80 if listening else 30000 + i, "" if listening else "10.0.0.9",
            0 if listening else 443 + i % 2,
            ("LISTEN" if listening else "ESTABLISHED") if protocol == 6 else "",
            draw(st.sampled_from((0, 9000 + i))), NS,
        ))  # fmt: skip
    samples: list[list[SocketRecord]] = []
    current = list(pool)
    for _ in range(draw(st.integers(1, 12))):
        sample = []
        for i, before in enumerate(current):
            change = draw(st.sampled_from(("keep", "keep", "gone", "state", "owner")))
            record = before
            if change == "state" and record.protocol == 6 and record.state != "LISTEN":
                record = replace(record, state=draw(st.sampled_from(STATES)))
            elif change == "owner":
                record = replace(record, pid=draw(st.sampled_from((None, 700, 702))))
            current[i] = record
            if change != "gone":
                sample.append(record)
        samples.append(sample)
    return samples, draw(st.lists(st.booleans(), min_size=len(samples), max_size=len(samples)))


STATES = ("ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT1", "TIME_WAIT", "SYN_SENT")


@settings(max_examples=300, deadline=None)
@given(churn())
def test_identity_merge_serves_the_rows_of_the_simple_merge(
    case: tuple[list[list[SocketRecord]], list[bool]],
) -> None:
    samples, queries = case
    lookup = lambda pid: ProcessInfo(name=f"p{pid}", uid=pid)  # noqa: E731
    fast, reference = ConnectionTracker(lookup), ReferenceTracker(lookup)
    for k, (sample, query) in enumerate(zip(samples, queries, strict=True)):
        now = 2000.0 + k * 0.6
        fast.update(sample, now)
        reference.update(sample, now)
        if query:
            assert sorted(map(_sorted_items, fast.rows(now))) == sorted(
                map(_sorted_items, reference.rows(now))
            )
    assert (fast.tracked, fast.lingering) == (reference.tracked, reference.lingering)


def _sorted_items(row: dict[str, str]) -> list[tuple[str, str]]:
    return sorted(row.items())
