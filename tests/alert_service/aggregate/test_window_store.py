"""The state database holds exactly the groups held in memory after each batch.

Random streams over rules with a small ``max_groups`` (so groups are dropped to make
room), stored through :class:`~alert_service.state.windows.WindowStore` every few
events in a real SQLite transaction (a change row per batch, folded into
``aggregate_windows`` every few batches): after each commit, a new store loading the
same database must hold the same groups, each with the same state.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.match.aggregate import Aggregator
from alert_service.state.db import StateTarget, open_state
from alert_service.state.postgres import PgTarget
from alert_service.state.windows import WindowStore, decode_changes, encode_changes
from tests.alert_service.aggregate.aggregate_support import config, event
from tests.helpers.services import need_postgresql, unique_name


def _held(agg: Aggregator) -> dict[str, dict[Any, Any]]:
    return {
        rule: {key: group.to_doc() for key, group in agg.held_groups(rule).items()}
        for rule in agg.rule_names
    }


def _rules(tmp: Path, max_groups: int) -> Any:
    scan = {
        "name": "scan",
        "notify": ["hook"],
        "aggregate": {"type": "value_count", "field": "remote_port", "threshold": 3,
                      "window_secs": 5, "group_by": ["host", "pid"], "max_groups": max_groups},
    }  # fmt: skip
    rows = {
        "name": "rows",
        "notify": ["hook"],
        "direction": ["outbound"],
        "aggregate": {"type": "event_count", "threshold": 4, "window_secs": 8,
                      "group_by": ["remote_port"], "max_groups": max_groups},
    }  # fmt: skip
    beacon = {
        "name": "beacon",
        "notify": ["hook"],
        "beacon": {"min_connections": 3, "window_secs": 30, "min_period_secs": 1,
                   "max_groups": max_groups, "sample_rows": 2},  # the sample slides
    }  # fmt: skip
    # Never alert on these streams: their values and row keys grow over many
    # batches, so change rows carry what each batch added (``base``).
    wide_values = {
        "name": "wide-values",
        "notify": ["hook"],
        "aggregate": {"type": "value_count", "field": "local_port", "threshold": 1000,
                      "window_secs": 40, "group_by": ["host"], "max_groups": max_groups},
    }  # fmt: skip
    wide_rows = {
        "name": "wide-rows",
        "notify": ["hook"],
        "aggregate": {"type": "event_count", "threshold": 1000, "window_secs": 40,
                      "group_by": ["remote_port"], "max_groups": max_groups},
    }  # fmt: skip
    return config(tmp, scan, rows, beacon, wide_values, wide_rows).aggregate_rules


_EVENTS = st.lists(
    st.tuples(
        st.integers(-2, 6),  # time step
        st.integers(1, 4),  # pid
        st.integers(0, 4),  # remote_port
        st.integers(0, 12),  # local_port
        st.sampled_from([0, 1]),  # counter
        st.sampled_from(["outbound", "inbound"]),
    ),
    max_size=50,
)


@settings(max_examples=150, deadline=None)
@given(
    items=_EVENTS,
    max_groups=st.integers(1, 3),
    storage=st.tuples(st.integers(1, 4), st.integers(1, 4)),
)
def test_stored_groups_equal_the_held_ones(
    tmp_path_factory: Any, items: list[Any], max_groups: int, storage: tuple[int, int]
) -> None:
    batch, compact_after = storage
    tmp = tmp_path_factory.mktemp("store")
    rules = _rules(tmp, max_groups)
    conn = open_state(tmp / "state.sqlite3")
    store = WindowStore(conn, Aggregator(rules), compact_after)
    t = 1000
    for n, (step, pid, port, local, counter, direction) in enumerate(items):
        t += step
        ev = event(
            t,
            counter=counter,
            pid=pid,
            remote_port=port,
            local_port=local,
            direction=direction,
            first_seen=t,
        )
        store.aggregator.observe(ev)
        if n % batch == 0:
            conn.execute("BEGIN IMMEDIATE")
            store.save(float(n))
            conn.execute("COMMIT")
            again = WindowStore(conn, Aggregator(rules), compact_after)
            assert _held(again.aggregator) == _held(store.aggregator)
    conn.close()


def test_change_rows_round_trip_values_orjson_refuses(tmp_path: Path) -> None:
    """An integer beyond 64 bits or a lone surrogate falls back to the standard encoder."""
    (rule,) = [r for r in _rules(tmp_path, 5) if r.name == "scan"]
    agg = Aggregator([rule])
    agg.observe(event(1, pid=1, remote_port=1, name="bad\udc80name", socket=2**70))
    changed, removed = agg.take_changed_keys()
    again, gone = decode_changes(encode_changes(changed, removed))
    assert [(r, k, g.to_doc()) for r, k, g in again] == [
        (r, k, g.to_doc()) for r, k, g in changed
    ]
    assert gone == removed


def test_a_surrogate_in_a_group_is_stored_and_loaded(tmp_path: Path) -> None:
    """osquery's ``\\xNN`` escapes can leave a lone surrogate in a value; the change row
    and the folded row both store it (as an escape) and give it back."""
    rules = _rules(tmp_path, 5)
    conn = open_state(tmp_path / "state.sqlite3")
    for compact_after in (2, 1):  # a change row, then a fold
        store = WindowStore(conn, Aggregator(rules), compact_after)
        store.aggregator.observe(event(1, pid=1, remote_port=1, name="bad\udc80name"))
        conn.execute("BEGIN IMMEDIATE")
        store.save(1.0)
        conn.execute("COMMIT")
        again = WindowStore(conn, Aggregator(rules), compact_after)
        assert _held(again.aggregator) == _held(store.aggregator)
        (group,) = again.aggregator.held_groups("scan").values()
        assert group.sample[0]["name"] == "bad\udc80name"
    conn.close()


def test_a_growing_group_is_stored_as_changes_and_loaded_whole(
    tmp_path: Path, target: StateTarget
) -> None:
    """A group that counts over many batches: each change row after its first carries
    only the value the batch added, and a reload (a restart) gives the whole group."""
    rules = _rules(tmp_path, 5)
    conn = open_state(target)
    try:
        store = WindowStore(conn, Aggregator(rules), compact_after=100)
        for n, local in enumerate((7, 8, 9, 10)):
            store.aggregator.observe(event(100 + n, pid=1, remote_port=1, local_port=local))
            conn.execute("BEGIN IMMEDIATE")
            store.save(float(n))
            conn.execute("COMMIT")
            again = WindowStore(conn, Aggregator(rules), compact_after=100)
            assert _held(again.aggregator) == _held(store.aggregator)
        rows = conn.execute("SELECT changes FROM aggregate_window_changes ORDER BY seq").fetchall()
        wide = [
            [(e[5], len(e[8]), e[10]) for e in json.loads(text)[1] if e[0] == "wide-values"]
            for (text,) in rows
        ]
        # the first event is held as a tuple (stored whole), the second makes it a
        # group (whole again), then one value and one sample row per change
        assert wide == [
            [([7], 1, None)],
            [([7, 8], 2, None)],
            [([9], 1, [2, 0, 2])],
            [([10], 1, [3, 0, 3])],
        ]
        (group,) = again.aggregator.held_groups("wide-values").values()
        assert list(group.values) == [7, 8, 9, 10]
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateTarget]:
    if request.param == "sqlite":
        yield str(tmp_path / "state.sqlite3")
        return
    import psycopg  # noqa: PLC0415 - only with PostgreSQL
    from psycopg import sql  # noqa: PLC0415

    dsn = need_postgresql()
    pg = PgTarget(dsn, unique_name("tc"))
    yield pg
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg.schema)))


def test_change_rows_and_folds_on_each_backend(tmp_path: Path, target: StateTarget) -> None:
    """Change rows, a fold and a reload keep the groups (and a late line's window) on
    SQLite and on PostgreSQL alike."""
    rules = _rules(tmp_path, 5)
    conn = open_state(target)
    try:
        store = WindowStore(conn, Aggregator(rules), compact_after=3)
        stream = [(100, 1, p) for p in (1, 2, 3)] + [(200, 2, 1), (201, 3, 1), (103, 1, 4)]
        crossings = []
        for t, pid, port in stream:  # one batch per line: two change rows, then a fold
            crossings += store.aggregator.observe(event(t, pid=pid, remote_port=port))
            conn.execute("BEGIN IMMEDIATE")
            store.save(float(t))
            conn.execute("COMMIT")
            again = WindowStore(conn, Aggregator(rules), compact_after=3)
            assert _held(again.aggregator) == _held(store.aggregator)
            store = again
        # pid 1 crossed once (window 100-105); its late line at 103 joined that window
        assert [(a.rule, a.group["pid"], a.first_time) for a in crossings] == [("scan", 1, 100)]
        scan = store.aggregator.held_groups("scan")
        assert scan[("web-01", 1)].start == 100
    finally:
        conn.close()
