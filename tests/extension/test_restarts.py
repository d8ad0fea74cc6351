"""Restarts log no change: saved rows come back to the connections that lived through."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from extension.collect.base import Collector
from extension.columns import STABLE_COLUMNS
from extension.enrich import connections
from extension.enrich.connections import ConnectionTracker
from extension.enrich.saved import RowStore, SavedRow
from extension.model import FlowEvent, ProcessInfo, SocketRecord
from extension.sampler import Sampler

NS = 4026531840
CURL = ProcessInfo(name="curl", path="/usr/bin/curl", cmdline="curl http://x", uid=1000,
                   username="alice", parent=10, start_time=1_700_000_000)  # fmt: skip
NEWER = ProcessInfo(name="other", path="/usr/bin/other", uid=0, username="root", parent=1,
                    start_time=1_700_000_500)  # fmt: skip
OUT = SocketRecord(
    pid=4242, family=2, protocol=6, local_address="10.0.0.5", local_port=51000,
    remote_address="203.0.113.9", remote_port=443, state="ESTABLISHED",
    socket=777, net_namespace=NS,
)  # fmt: skip


def restarted(saved: list[SavedRow], lookup: ProcessInfo = NEWER) -> ConnectionTracker:
    tracker = ConnectionTracker(lambda pid: lookup, linger_secs=6)
    tracker.restore(saved, now=200.0)
    return tracker


def test_a_connection_that_lives_through_a_restart_keeps_its_row() -> None:
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.update([OUT], now=100.0)
    (first,) = before.rows(100.1)
    after = restarted(before.saved_rows())  # the process now reads differently
    after.update([OUT], now=200.5)
    (again,) = after.rows(200.6)
    assert {k: v for k, v in again.items() if k not in ("state", "last_seen")} == {
        k: v for k, v in first.items() if k not in ("state", "last_seen")
    }
    assert again["first_seen"] == "100" and again["name"] == "curl"
    assert after.revived == 1


def test_a_reused_inode_with_other_addresses_is_a_new_row() -> None:
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.update([OUT], now=100.0)
    before.rows(100.1)
    after = restarted(before.saved_rows())
    after.update([replace(OUT, remote_port=8443)], now=200.5)
    (row,) = after.rows(200.6)
    assert row["name"] == "other" and row["first_seen"] == "200" and after.revived == 0


def test_a_connection_that_closed_during_the_restart_is_gone() -> None:
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.update([OUT], now=100.0)
    before.rows(100.1)
    after = restarted(before.saved_rows())
    after.update([], now=200.5)
    assert after.rows(200.6) == [], "osquery logs it removed, as it should"
    other = replace(OUT, socket=778, local_port=51001)
    after.update([other, replace(OUT, socket=777)], now=203.0)  # the inode comes back later
    assert {r["first_seen"] for r in after.rows(203.1)} == {"203"}


def test_lingering_rows_linger_on_after_a_restart() -> None:
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.update([OUT], now=100.0)
    before.rows(100.1)
    before.update([], now=101.0)
    before.update([], now=101.5)  # closed, lingering until 107.5
    after = ConnectionTracker(lambda pid: NEWER, linger_secs=6)
    after.restore(before.saved_rows(), now=103.0)
    after.update([], now=103.5)
    (row,) = after.rows(103.6)
    assert row["name"] == "curl" and row["first_seen"] == "100"
    after.update([], now=108.0)
    assert after.rows(108.1) == []


def test_an_event_only_row_comes_back_open() -> None:
    flow = SocketRecord(4242, 2, 17, "10.0.0.5", 53000, "203.0.113.53", 53, "", None, NS)
    sender = SocketRecord(4242, 2, 17, "0.0.0.0", 53000, "", 0, "", 990, NS)
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.observe([FlowEvent(("udp", 1), flow, CURL, "outbound", "", 100.0)], now=100.05)
    before.update([sender], now=100.5, started=100.4)
    flows = [r for r in before.rows(100.6) if r["remote_port"] == "53"]
    after = restarted(before.saved_rows())
    after.update([sender], now=200.5, started=200.4)
    assert [r for r in after.rows(200.6) if r["remote_port"] == "53"] == [
        {**flows[0], "last_seen": "200"}
    ]


def test_the_store_round_trips_and_keeps_its_file_private(tmp_path: Path) -> None:
    store = RowStore(str(tmp_path / "state"))
    rows = [SavedRow(("inode", NS, 777), {"pid": "1", "name": "x"}, None, "ESTABLISHED")]
    assert store.save(rows)
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o600
    assert RowStore(str(tmp_path / "state")).load() == rows


def test_a_file_from_another_boot_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state"
    store = RowStore(str(path))
    store.save([SavedRow(("inode", NS, 777), {"pid": "1"}, None, "")])
    doc = orjson.loads(path.read_bytes())
    doc["boot_id"] = "another boot"
    path.write_bytes(orjson.dumps(doc))
    again = RowStore(str(path))
    assert again.load() == [] and again.error == ""


def test_a_damaged_file_is_reported_and_the_table_works_without_it(tmp_path: Path) -> None:
    path = tmp_path / "state"
    path.write_text(json.dumps({"version": 1, "boot_id": RowStore(None)._boot, "rows": [7]}))
    store = RowStore(str(path))
    assert store.load() == []
    assert "not a saved table" in store.error


def test_an_unwritable_place_is_reported(tmp_path: Path) -> None:
    store = RowStore(str(tmp_path / "missing" / "state"))
    assert not store.save([])
    assert "cannot write in" in store.error


def test_a_saved_row_with_columns_the_table_has_not_is_served_with_its_columns_only() -> None:
    """A state file is read back as text maps: a row may carry keys the table has
    no column for (a hand-edited or damaged file). They are left out; they must
    not take the table down (the arena holds maps of fewer than 256 entries)."""
    before = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    before.update([OUT, replace(OUT, socket=778, local_port=51001)], now=100.0)
    before.rows(100.1)
    good, other = before.saved_rows()
    junk = {f"extra_{i}": "x" for i in range(300)}
    other = replace(other, row={**other.row, **junk})
    after = restarted([good, other])
    after.update([OUT, replace(OUT, socket=778, local_port=51001)], now=200.5)
    for _ in range(2):  # every reply, not only the first
        rows = after.rows(200.6)
        assert [{k: v for k, v in row.items() if k in STABLE_COLUMNS} for row in rows] == [
            good.row,
            {k: v for k, v in other.row.items() if k in STABLE_COLUMNS},
        ]
        assert all(set(row) <= STABLE_COLUMNS | {"state", "last_seen"} for row in rows)
        assert after.encoded_rows(200.6, stable_only=True)[1] == 2
    assert after.revived == 2


def test_the_rows_to_save_are_as_they_were_when_taken_whatever_happens_next() -> None:
    # The sampler takes them under its lock and encodes them after letting go of it.
    tracker = ConnectionTracker(lambda pid: CURL, linger_secs=6)
    others = [replace(OUT, local_port=51000 + i, socket=800 + i) for i in range(1, 6)]
    tracker.update([OUT, *others], now=100.0)
    tracker.rows(100.0)
    taken = tracker.saved_rows_later()
    expected = tracker.saved_rows()
    tracker.update([OUT, *others[2:]], now=102.0)
    tracker.update([others[4]], now=104.0)  # closes the rest; two had closed already
    tracker.rows(104.0)  # the chunks are built again
    assert taken() == expected
    assert tracker.saved_rows() != expected


def test_the_sampler_encodes_the_rows_to_save_after_letting_go_of_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Listed(Collector):
        def collect(self) -> list[SocketRecord]:
            return [replace(OUT, local_port=51000 + i, socket=800 + i) for i in range(50)]

    store = RowStore(str(tmp_path / "state"))
    sampler = Sampler(Listed(), clock=lambda: 100.0, store=store)
    sampler.sample_once()
    sampler.rows()
    held: list[bool] = []
    real = connections.decode_rows

    def decode(pieces: Sequence[bytes], count: int) -> list[dict[str, str]]:
        held.append(sampler._lock.locked())
        return real(pieces, count)

    monkeypatch.setattr(connections, "decode_rows", decode)
    sampler.save(force=True)
    assert held == [False], "decoded once, with the lock free for queries and samples"
    assert len(store.load()) == 50


def test_two_saves_at_once_leave_the_later_rows_in_the_file(tmp_path: Path) -> None:
    # stop() saves while a sampling thread that outlived its join may still be
    # saving: the rows taken last must be the ones left in the file.
    listed = [replace(OUT, local_port=51000 + i, socket=800 + i) for i in range(20)]

    class Listed(Collector):
        def collect(self) -> list[SocketRecord]:
            return list(listed)

    class Paused(RowStore):
        """The real store; its first write waits until the test lets it go."""

        def __init__(self, path: str) -> None:
            super().__init__(path)
            self.writing = threading.Event()
            self.go_on = threading.Event()

        def save(self, rows: list[SavedRow]) -> bool:
            if not self.writing.is_set():
                self.writing.set()
                assert self.go_on.wait(10)
            return super().save(rows)

    store = Paused(str(tmp_path / "state"))
    clock = [100.0]
    sampler = Sampler(Listed(), clock=lambda: clock[0], store=store)
    sampler.sample_once()
    sampler.rows()
    first = threading.Thread(target=sampler.save, kwargs={"force": True})
    first.start()
    assert store.writing.wait(10)
    del listed[10:]  # ten sockets close; two samples make it sure
    for _ in range(2):
        clock[0] += 1.0
        sampler.sample_once()
    sampler.rows()
    second = threading.Thread(target=sampler.save, kwargs={"force": True})
    second.start()
    second.join(0.5)
    store.go_on.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    saved = RowStore(str(tmp_path / "state")).load()
    assert sum(row.closed_at is None for row in saved) == 10, (
        "the file holds the rows as the second save took them"
    )
