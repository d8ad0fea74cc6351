"""Groups held as a tuple after their first event equal groups held whole (property test).

:class:`~alert_service.match.aggregate.Aggregator` keeps a group that has counted one
event as a tuple and builds the :class:`~alert_service.match.groups.Group` on its
second event (``first_as_tuple``, the default). On random rules of the three kinds
(thresholds and ``min_connections`` from the smallest up, ``sample_rows`` 0-2,
``max_groups`` small enough that groups are dropped for room) and random streams
(older lines, counter-0 re-logs, empty values), it must give the same alerts, hold the
same groups in the same order, report the same changes and drop the same events as an
aggregator that builds every group whole from its first event, after every event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.match.aggregate import AggregateRule, Aggregator
from tests.alert_service.aggregate.aggregate_support import config, event


def _rules(tmp: Path, kinds: list[tuple[str, int, int, int, int]]) -> tuple[AggregateRule, ...]:
    raw: list[dict[str, Any]] = []
    for i, (kind, threshold, window, sample_rows, max_groups) in enumerate(kinds):
        item: dict[str, Any] = {"name": f"r{i}", "notify": ["hook"]}
        if kind == "beacon":
            item["beacon"] = {
                "min_connections": 2 + threshold,  # at least 3
                "window_secs": window,
                "min_period_secs": 1,
                "jitter_secs": 1,
                "sample_rows": sample_rows,
                "max_groups": max_groups,
                "group_by": ["host", "pid", "remote_port"],
            }
        else:
            agg: dict[str, Any] = {
                "type": kind,
                "threshold": threshold,
                "window_secs": window,
                "sample_rows": sample_rows,
                "max_groups": max_groups,
                "group_by": ["host", "pid"][: 1 + i % 2],
            }
            if kind == "value_count":
                agg["field"] = "remote_port"
            item["aggregate"] = agg
        if i % 3 == 2:
            item["direction"] = ["outbound"]
        raw.append(item)
    return config(tmp, *raw).aggregate_rules


_KINDS = st.lists(
    st.tuples(
        st.sampled_from(["event_count", "value_count", "beacon"]),
        st.integers(1, 4),  # threshold (beacon: min_connections - 2)
        st.integers(2, 20),  # window_secs
        st.integers(0, 2),  # sample_rows
        st.sampled_from([1, 2, 3, 10_000]),  # max_groups
    ),
    min_size=1,
    max_size=4,
)

_EVENTS = st.lists(
    st.tuples(
        st.integers(-2, 6),  # time step (an older line now and then)
        st.integers(1, 4),  # pid
        st.sampled_from([0, 1, 2, 3, ""]),  # remote_port ("" is not a value)
        st.integers(0, 3),  # local_port: the row's identity
        st.sampled_from([0, 1]),  # counter (0: a re-log)
        st.sampled_from(["outbound", "inbound"]),
        st.integers(-1, 3),  # first_seen offset (-1: none, beacon then uses unixTime)
    ),
    max_size=60,
)


def _held(agg: Aggregator) -> dict[str, list[tuple[Any, Any]]]:
    return {
        rule: [(key, group.to_doc()) for key, group in agg.held_groups(rule).items()]
        for rule in agg.rule_names
    }


def _changes(agg: Aggregator) -> tuple[list[Any], list[Any]]:
    changed, removed = agg.take_changed_keys()
    return sorted((r, repr(k), g.to_doc()) for r, k, g in changed), sorted(map(repr, removed))


@settings(max_examples=300, deadline=None)
@given(kinds=_KINDS, items=_EVENTS, every=st.integers(1, 5))
def test_first_event_tuples_equal_whole_groups(
    tmp_path_factory: Any, kinds: list[Any], items: list[Any], every: int
) -> None:
    rules = _rules(tmp_path_factory.mktemp("first"), kinds)
    tuples, whole = Aggregator(rules), Aggregator(rules, first_as_tuple=False)
    t = 1000
    for n, (step, pid, port, local, counter, direction, seen) in enumerate(items):
        t += step
        columns: dict[str, Any] = {
            "pid": pid,
            "remote_port": port,
            "local_port": local,
            "direction": direction,
        }
        if seen >= 0:
            columns["first_seen"] = t - seen
        ev = event(t, counter=counter, **columns)
        got = [a.as_dict() for a in tuples.observe(ev)]
        want = [a.as_dict() for a in whole.observe(ev)]
        assert got == want
        assert _held(tuples) == _held(whole)
        assert tuples.dropped == whole.dropped
        for rule in tuples.rule_names:
            assert tuples.group_count(rule) == whole.group_count(rule)
        if n % every == 0:
            assert _changes(tuples) == _changes(whole)
