"""Sampling fast paths equal their references (hypothesis), on fake /proc trees and records."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.collect import owners
from extension.collect.linux_proc import LinuxProcCollector
from extension.enrich.connections import ConnectionTracker
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
