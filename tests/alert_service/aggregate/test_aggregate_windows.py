"""Aggregation rules: window edges, distinct counting, counter-0 re-logs, the cap."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from alert_service.match.aggregate import AggregateAlert, Aggregator, beacon_score
from alert_service.pipeline import Pipeline
from alert_service.source.records import FileIdentity, LineChunk
from tests.alert_service.aggregate.aggregate_support import config, event, line, scan_rule


def aggregator(tmp_path: Path, **aggregate: Any) -> Aggregator:
    return Aggregator(config(tmp_path, scan_rule(**aggregate)).aggregate_rules)


def feed(agg: Aggregator, items: list[tuple[int, int]]) -> list[AggregateAlert]:
    """(unixTime, remote_port) events, each on a new local port."""
    out: list[AggregateAlert] = []
    for i, (t, port) in enumerate(items):
        out += agg.observe(event(t, remote_port=port, local_port=40000 + i))
    return out


# (events as (t, port), window 10 s threshold 3 distinct ports) → crossing times
WINDOW_EDGES = [
    ([(0, 1), (5, 2), (9, 3)], [9]),  # last second of the window still counts
    ([(0, 1), (5, 2), (10, 3)], []),  # t0 + window is outside: new window at 10
    ([(0, 1), (5, 2), (10, 3), (11, 4), (12, 5)], [12]),  # the new window crosses alone
    ([(0, 1), (1, 2), (2, 3), (3, 4), (9, 5)], [2]),  # one alert per window
    ([(0, 1), (1, 2), (2, 3), (10, 4), (11, 5), (12, 6)], [2, 12]),  # and one per next
    ([(5, 1), (3, 2), (6, 3)], [6]),  # an older line counts in the open window
]


@pytest.mark.parametrize(("items", "crossings"), WINDOW_EDGES)
def test_window_edges(tmp_path: Path, items: list[tuple[int, int]], crossings: list[int]) -> None:
    alerts = feed(aggregator(tmp_path), items)
    assert [a.last_time for a in alerts] == crossings
    assert len({a.id for a in alerts}) == len(alerts)  # each window its own id


# (ports in one window, threshold) → count at the crossing, or None
DISTINCT = [
    ([1, 1, 2, 2, 3], 3, 3),  # repeats do not count
    ([1, 1, 1, 1, 1], 2, None),
    ([7, 8], 2, 2),
    ([1, 0, 2], 3, 3),  # 0 is a value (a port); only missing/empty values are not
]


@pytest.mark.parametrize(("ports", "threshold", "count"), DISTINCT)
def test_distinct_counting(
    tmp_path: Path, ports: list[int], threshold: int, count: int | None
) -> None:
    alerts = feed(aggregator(tmp_path, threshold=threshold), [(i, p) for i, p in enumerate(ports)])
    assert [a.count for a in alerts] == ([] if count is None else [count])


def test_missing_values_are_not_counted(tmp_path: Path) -> None:
    agg = aggregator(tmp_path, threshold=2)
    assert agg.observe(event(1, remote_port="")) == []
    assert agg.observe(event(2, remote_port=5, local_port=2)) == []
    assert len(agg.observe(event(3, remote_port=6, local_port=3))) == 1


def test_alert_carries_group_count_times_and_bounded_sample(tmp_path: Path) -> None:
    agg = aggregator(tmp_path, threshold=4, sample_rows=2)
    (alert,) = feed(agg, [(100, 1), (101, 2), (103, 3), (104, 4)])
    doc = alert.as_dict()
    assert doc["kind"] == "aggregate"
    assert doc["rule"] == "port-scan"
    assert doc["host"] == "web-01"
    agg_doc = doc["aggregate"]
    assert agg_doc["group"] == {
        "host": "web-01",
        "pid": 4242,
        "start_time": 1700000000,
        "remote_address": "10.0.0.9",
    }
    assert (agg_doc["count"], agg_doc["first_time"], agg_doc["last_time"]) == (4, 100, 104)
    assert [r["remote_port"] for r in agg_doc["sample"]] == [1, 2]
    assert (agg_doc["threshold"], agg_doc["field"]) == (4, "remote_port")
    # The alert's connection is the group, so dedup keys (pid, remote address) are per group.
    assert doc["connection"] == {
        "pid": 4242,
        "start_time": 1700000000,
        "remote_address": "10.0.0.9",
    }


def test_groups_are_counted_apart(tmp_path: Path) -> None:
    agg = aggregator(tmp_path)
    alerts: list[AggregateAlert] = []
    for t, (pid, port) in enumerate([(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)]):
        alerts += agg.observe(event(t, pid=pid, remote_port=port, local_port=t))
    assert [a.group["pid"] for a in alerts] == [1]


def test_filter_conditions_apply(tmp_path: Path) -> None:
    agg = aggregator(tmp_path, threshold=2)
    assert agg.observe(event(1, remote_port=1, direction="inbound")) == []
    assert agg.observe(event(2, remote_port=2, direction="inbound", local_port=2)) == []
    assert agg.observe(event(3, remote_port=3, local_port=3)) == []
    removed = event(4, remote_port=4, local_port=4)
    assert agg.observe(dataclasses.replace(removed, action="removed")) == []  # default [added]


def test_counter_zero_relog_does_not_count_again(tmp_path: Path) -> None:
    agg = Aggregator(
        config(
            tmp_path,
            scan_rule(type="event_count", field=None, threshold=3, window_secs=100),
        ).aggregate_rules
    )
    first = event(1, remote_port=1, local_port=1)
    second = event(2, remote_port=2, local_port=2)
    assert agg.observe(first) == [] and agg.observe(second) == []
    # osquery restarted: every current row again as added with counter 0
    assert agg.observe(event(5, counter=0, remote_port=1, local_port=1)) == []
    assert agg.observe(event(5, counter=0, remote_port=2, local_port=2)) == []
    (alert,) = agg.observe(event(5, counter=0, remote_port=3, local_port=3))  # new row: counts
    assert alert.count == 3


def test_cap_drops_new_groups_and_counts(tmp_path: Path) -> None:
    agg = aggregator(tmp_path, max_groups=2)
    assert agg.observe(event(1, pid=1)) == []
    assert agg.observe(event(2, pid=2)) == []
    assert agg.observe(event(3, pid=3)) == []
    assert agg.dropped == 1
    assert agg.group_count("port-scan") == 2
    assert agg.observe(event(4, pid=1, remote_port=23, local_port=9)) == []  # known group: kept
    assert agg.dropped == 1
    # the windows of pids 1 and 2 end at 11 and 12: a new group then gets a place
    assert agg.observe(event(12, pid=3)) == []
    assert agg.dropped == 1
    assert agg.group_count("port-scan") <= 2


def test_ended_windows_are_kept_until_the_cap_needs_room(tmp_path: Path) -> None:
    agg = aggregator(tmp_path, max_groups=2)
    agg.observe(event(1, pid=1))
    dirty, removed = agg.take_changes()
    assert len(dirty) == 1 and not removed
    agg.observe(event(30, pid=2))
    dirty, removed = agg.take_changes()
    # pid 1's window ended at 11, but a late line may still count in it: kept
    assert len(dirty) == 1 and not removed
    assert agg.group_count("port-scan") == 2
    agg.observe(event(31, pid=3))  # a third group: pid 1's ended window makes room
    dirty, removed = agg.take_changes()
    assert len(dirty) == 1 and len(removed) == 1
    assert agg.group_count("port-scan") == 2


BEACONS = [
    # (start times, min_connections, fires)
    ([0, 60, 120, 180, 240, 300, 360, 420], 8, True),
    ([0, 61, 119, 181, 240, 302, 359, 421], 8, True),  # ±2 s jitter
    ([0, 60, 120, 180, 240, 300, 360], 8, False),  # too few
    ([0, 5, 90, 100, 250, 251, 400, 700], 8, False),  # irregular
    ([0, 2, 4, 6, 8, 10, 12, 14], 8, False),  # faster than min_period_secs (10)
    ([0, 60, 120, 180, 500, 560, 620, 680, 740], 8, True),  # one gap: 7 of 8 regular
]


@pytest.mark.parametrize(("times", "minimum", "fires"), BEACONS)
def test_beacon_table(tmp_path: Path, times: list[int], minimum: int, fires: bool) -> None:
    rule = {
        "name": "beacon",
        "notify": ["hook"],
        "beacon": {"min_connections": minimum, "window_secs": 3600},
    }
    agg = Aggregator(config(tmp_path, rule).aggregate_rules)
    alerts: list[AggregateAlert] = []
    for i, t in enumerate(times):
        alerts += agg.observe(event(1000 + t, local_port=i + 1, first_seen=1000 + t))
    assert len(alerts) == (1 if fires else 0)
    if fires:
        assert alerts[0].kind == "beacon"
        assert alerts[0].detail["period_secs"] == pytest.approx(60, abs=2)
        # the same connection logged again (counter 0) is not a new connection
        again = agg.observe(event(5000, counter=0, local_port=1, first_seen=1000 + times[0]))
        assert again == []


def test_beacon_score_numbers(tmp_path: Path) -> None:
    spec = (
        config(tmp_path, {"name": "b", "notify": ["hook"], "beacon": {"jitter_secs": 1}})
        .aggregate_rules[0]
        .spec
    )
    assert beacon_score([0, 30, 60, 90, 150], spec) == (30.0, 0.75, 3.0)
    assert beacon_score([0], spec) is None


def test_without_a_state_database_changes_are_not_kept(tmp_path: Path) -> None:
    """``replay`` and the in-memory loop store no windows: the changes a store would
    take must not pile up (one key per group ever opened, and per group dropped)."""
    cfg = config(tmp_path, scan_rule(max_groups=5))
    pipeline = Pipeline(cfg)
    identity = FileIdentity(1, 2)
    for n in range(4):
        lines = [
            line(1000 * n + 10 * i, pid=1000 * n + i, remote_port=i).encode() for i in range(50)
        ]
        pipeline.match_chunk(LineChunk(identity, "log", 0, lines))
    assert pipeline.aggregates.group_count("port-scan") == 5
    assert pipeline.aggregates.dropped == 0
    assert pipeline.aggregates.pending_changes == 0
