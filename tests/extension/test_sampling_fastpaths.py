"""Sampling fast paths equal their references (hypothesis), on fake /proc trees and records."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.collect import owners
from extension.collect.linux_proc import LinuxProcCollector
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
