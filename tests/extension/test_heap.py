"""The heap settler: rows leave the collector's reach, and still get freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from extension.collect import select_collector
from extension.enrich.connections import ConnectionTracker
from extension.heap import HeapSettler
from extension.model import ProcessInfo, SocketRecord
from extension.sampler import Sampler
from tests.helpers.procs import wait_for

ROWS = 5_000
TURNOVER = 1_000
NOW = 1_700_000_000.0

PROCESSES = {
    pid: ProcessInfo(
        name=f"p{pid}",
        path=f"/usr/bin/p{pid}",
        cmdline=f"p{pid} --serve",
        uid=1000,
        username="user",
        parent=1,
        parent_name="systemd",
        parent_path="/usr/lib/systemd/systemd",
        start_time=1_700_000_000 - pid,
    )
    for pid in range(1, 101)
}


def lookup(pid: int | None) -> ProcessInfo:
    return PROCESSES.get(pid or 0, ProcessInfo())


def record(n: int) -> SocketRecord:
    """The n-th connection: a distinct socket and 5-tuple."""
    return SocketRecord(
        pid=1 + n % 100,
        family=2,
        protocol=6,
        local_address="10.0.0.1",
        local_port=1024 + n % 60_000,
        remote_address=f"10.1.{n // 60_000 % 256}.{n % 250}",
        remote_port=443,
        state="ESTABLISHED",
        socket=100_000 + n,
        net_namespace=4026531840,
    )


class Churn:
    """A tracker holding ROWS open connections, TURNOVER of them replaced per sample."""

    def __init__(self) -> None:
        self.tracker = ConnectionTracker(lookup, linger_secs=2.0)
        self.records = [record(n) for n in range(ROWS)]
        self.next = ROWS
        self.now = NOW

    def sample(self) -> None:
        new = [record(self.next + i) for i in range(TURNOVER)]
        self.next += TURNOVER
        self.records = self.records[TURNOVER:] + new
        self.tracker.update(self.records, self.now, started=self.now - 0.1)
        self.tracker.encoded_rows(self.now)  # served: rows encoded, closed ones shown
        self.now += 1.0


@pytest.fixture
def collector_state() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()
    gc.enable()


def test_rows_hold_no_cycles(collector_state: None) -> None:
    """Rows made, served, closed and expired are all freed by reference counting."""
    churn = Churn()
    gc.disable()
    for _ in range(10):
        churn.sample()
    assert churn.tracker.tracked >= ROWS
    del churn
    assert gc.collect() == 0


def test_settled_rows_are_out_of_full_collections(collector_state: None) -> None:
    churn = Churn()
    churn.sample()
    before = len(gc.get_objects())
    assert before > 2 * ROWS  # without settling, a full collection walks every row
    settler = HeapSettler()
    settler.settle()
    assert len(gc.get_objects()) < ROWS // 10
    assert gc.get_freeze_count() > 2 * ROWS
    churn.sample()
    settler.settle()
    # only the objects made since the last settle are left to a collection
    assert len(gc.get_objects()) < ROWS // 10


def test_turnover_frees_frozen_rows(collector_state: None) -> None:
    """Rows replaced after being frozen are freed: the frozen set does not grow."""
    churn = Churn()
    settler = HeapSettler()
    for _ in range(5):  # linger reaches its steady size
        churn.sample()
        settler.settle()
    steady = gc.get_freeze_count()
    rows = churn.tracker.tracked
    assert rows > ROWS
    for _ in range(30):  # 30,000 rows made and dropped, six times the table
        churn.sample()
        settler.settle()
    assert churn.tracker.tracked == rows
    assert gc.get_freeze_count() <= steady + steady // 20


class Node:
    """A cyclic object whose end can be watched."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_cycles_are_collected_when_a_full_collection_is_due(
    collector_state: None,
) -> None:
    clock = [0.0]
    settler = HeapSettler(full_every_secs=600.0, clock=lambda: clock[0])
    node = Node()
    gone = weakref.ref(node)
    settler.settle()
    del node
    clock[0] = 599.0
    settler.settle()
    gc.collect()  # frozen: not even a full collection finds it
    assert gone() is not None
    clock[0] = 600.0
    settler.settle()
    assert gone() is None
    assert settler.full_collections == 1
    assert settler.settled == 3
    settler.release()
    assert gc.get_freeze_count() == 0


def test_full_every_secs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HeapSettler(full_every_secs=0.0)


def test_sampler_settles_after_each_sample_and_releases_on_stop(collector_state: None) -> None:
    settler = HeapSettler()
    sampler = Sampler(select_collector(), sample_interval_ms=50, heap=settler)
    sampler.start()
    try:
        assert settler.settled >= 1  # after the first sample, before the threads start
        wait_for(lambda: settler.settled >= 3, timeout_secs=10, interval_secs=0.05)
        assert gc.get_freeze_count() > 0
    finally:
        sampler.stop()
    assert gc.get_freeze_count() == 0
