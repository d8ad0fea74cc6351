"""A row the kernel events report under a second flow key: a late event under the first
is still the row's, and no key holds the row once it has left the table."""

from __future__ import annotations

from dataclasses import replace

from extension.enrich.connections import EARLIER_FLOW_KEYS, ConnectionTracker
from tests.extension.test_tracker_events import OUT, event, lookups


def _two_keys() -> ConnectionTracker:
    tracker = ConnectionTracker(lookups, linger_secs=6)
    sampled = replace(OUT, socket=777)
    tracker.update([sampled], now=100.0, started=99.9)
    tracker.observe([event(sampled, key="a", started=99.5)], now=100.2)
    tracker.observe([event(sampled, key="b", started=99.5)], now=100.4)
    assert len(tracker.rows(100.5)) == 1, "both flows are the one row"
    return tracker


def test_a_row_linked_to_a_second_flow_is_let_go_once_it_expires() -> None:
    # A socket the sampler follows is reported under one flow key, then another
    # (a connected UDP socket's next flow, a restarted event source). Once the
    # row has lingered and left, nothing may keep it: neither key still leads to it.
    tracker = _two_keys()
    (conn,) = tracker._connections.values()
    tracker.update([], now=101.0, started=100.9)
    tracker.update([], now=101.5, started=101.4)
    assert tracker.lingering == 1
    tracker.update([], now=108.0, started=107.9)
    assert tracker.rows(108.0) == [] and tracker.lingering == 0
    held = [key for key, row in tracker._flows.items() if row is conn]
    assert held == [], "a flow key still holds the row that left the table"


def test_a_late_end_under_the_first_key_after_the_row_closed_adds_no_row() -> None:
    tracker = _two_keys()
    # The sampler sees the socket gone twice: the row closes.
    tracker.update([], now=101.0, started=100.9)
    tracker.update([], now=101.5, started=101.4)
    assert tracker.lingering == 1
    # The event source then reports the first flow's end, a read late.
    sampled = replace(OUT, socket=777, state="CLOSE")
    tracker.observe([event(sampled, key="a", started=99.5, ended=101.0)], now=101.6)
    rows = tracker.rows(101.7)
    assert len(rows) == 1, f"one connection, shown {len(rows)} times"


def test_an_update_under_the_first_key_after_the_row_closed_adds_no_row() -> None:
    tracker = _two_keys()
    sampled = replace(OUT, socket=777, state="CLOSE")
    tracker.observe([event(sampled, key="b", started=99.5, ended=100.6)], now=100.7)
    assert tracker.lingering == 1
    tracker.observe([event(replace(OUT, socket=777), key="a", started=99.5)], now=100.8)
    rows = tracker.rows(100.9)
    assert len(rows) == 1, f"one connection, shown {len(rows)} times"


def test_flapping_between_two_keys_is_one_row_and_nothing_holds_it_after_it_left() -> None:
    tracker = _two_keys()
    sampled = replace(OUT, socket=777)
    for i in range(6):
        key = "ab"[i % 2]
        tracker.observe([event(sampled, key=key, started=99.5)], now=100.5 + i / 10)
        tracker.update([sampled], now=100.55 + i / 10, started=100.5 + i / 10)
        assert len(tracker.rows(100.56 + i / 10)) == 1
    (conn,) = tracker._connections.values()
    tracker.observe([event(replace(sampled, state="CLOSE"), key="b", started=99.5,
                           ended=101.2)], now=101.3)  # fmt: skip
    tracker.observe([event(replace(sampled, state="CLOSE"), key="a", started=99.5,
                           ended=101.2)], now=101.35)  # fmt: skip
    assert len(tracker.rows(101.4)) == 1 and tracker.lingering == 1
    tracker.update([], now=108.0, started=107.9)
    assert tracker.rows(108.0) == [] and tracker.tracked == 0
    assert [key for key, row in tracker._flows.items() if row is conn] == []
    assert tracker._earlier_flows == {}


def test_a_row_relinked_again_and_again_keeps_only_its_latest_keys() -> None:
    # A connected UDP socket that goes quiet for longer than the event source
    # remembers a flow gets a new flow key each time it speaks again; the
    # forgotten flows are never reported again, so their keys need not be kept.
    tracker = ConnectionTracker(lookups, linger_secs=6)
    sampled = replace(OUT, socket=777)
    tracker.update([sampled], now=100.0, started=99.9)
    for i in range(50):
        tracker.observe([event(sampled, key=f"k{i}", started=99.5)], now=100.1 + i / 100)
    (conn,) = tracker._connections.values()
    held = sorted(key for key, row in tracker._flows.items() if row is conn)
    assert len(held) == EARLIER_FLOW_KEYS + 1
    assert ("tcp", "k49") in held and ("tcp", "k48") in held and ("tcp", "k0") not in held
    assert len(tracker.rows(101.0)) == 1
