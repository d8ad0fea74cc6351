"""The aggregator equals a plain reference on random event streams (property test).

The reference below restates the semantics of docs/rules.md ("Aggregation rules") for
``event_count`` and ``value_count`` with plain dicts, one event at a time, and tries
every rule's filter on every event (:meth:`CompiledRule.matches`, no rule index). The
optimised :class:`~alert_service.match.aggregate.Aggregator` (a rule index over the
filters, one counting closure per kind) must give the same alerts (rule, group,
count, first and last time, sample), and so must one whose groups are stored in the
state database (:mod:`alert_service.state.windows`) and loaded back every few
batches (a restart).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.match.aggregate import AggregateRule, Aggregator
from alert_service.match.rules import CompiledRule
from alert_service.parse.event import Event
from alert_service.state.db import open_state
from alert_service.state.windows import WindowStore
from tests.alert_service.aggregate.aggregate_support import config, event

_Alert = tuple[str, tuple[Any, ...], int, int, int, tuple[Any, ...]]


class Reference:
    """Anchored windows per (rule, group), no cap, written for clarity not speed."""

    def __init__(self, rules: tuple[AggregateRule, ...]) -> None:
        self.rules = rules
        self.filters = {rule.name: CompiledRule(rule.filter) for rule in rules}
        self.groups: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}

    def observe(self, ev: Event) -> list[_Alert]:
        out: list[_Alert] = []
        for rule in self.rules:
            if not self.filters[rule.name].matches(ev):
                continue
            spec = rule.spec
            values = tuple(
                ev.host_identifier if g == "host" else ev.columns.get(g) for g in spec.group_by
            )
            now = ev.unix_time
            g = self.groups.get((rule.name, values))
            if g is None or g["start"] + spec.window_secs <= now:
                g = {
                    "start": now,
                    "count": 0,
                    "values": set(),
                    "rows": set(),
                    "sample": [],
                    "fired": False,
                }
                self.groups[(rule.name, values)] = g
            c = ev.columns
            row = tuple(
                c.get(k)
                for k in (
                    "pid",
                    "socket",
                    "local_address",
                    "local_port",
                    "remote_address",
                    "remote_port",
                    "first_seen",
                )
            )
            if ev.counter == 0 and row in g["rows"]:
                continue
            if g["fired"]:
                continue
            if spec.kind == "value_count":
                value = c.get(spec.field or "")
                if value in (None, "") or value in g["values"]:
                    continue
                g["values"].add(value)
                g["count"] = len(g["values"])
            else:
                g["rows"].add(row)
                g["count"] += 1
            if len(g["sample"]) < spec.sample_rows:
                g["sample"].append(dict(c))
            if g["count"] >= spec.threshold:
                g["fired"] = True
                g["values"], g["rows"] = set(), set()
                sample = tuple(sorted(json.dumps(r, sort_keys=True) for r in g["sample"]))
                out.append((rule.name, values, g["count"], g["start"], now, sample))
        return out


FILTERS: list[dict[str, Any]] = [
    {},
    {"direction": ["outbound"]},
    {"remote_port": [1, 2]},
    {"remote_address": {"include": ["10.0.0.0/8"]}},
    {"direction": ["outbound"], "remote_address": {"exclude": ["10.0.0.0/8"]}},
    {"exclude": [{"remote_port": [3]}]},
    {"process": {"name": {"exact": ["scanner"]}}, "remote_port": [0, 3, 4]},
]
"""Filters of the shapes the shipped rules use: exact values, port lists, CIDRs, an
``exclude`` entry, a process name; the rule index looks them up."""


def _rules(tmp: Path, kinds: list[tuple[str, int, int, int]]) -> tuple[AggregateRule, ...]:
    raw = []
    for i, (kind, threshold, window, filtered) in enumerate(kinds):
        agg: dict[str, Any] = {
            "type": kind,
            "threshold": threshold,
            "window_secs": window,
            "sample_rows": 2,
            "group_by": ["host", "pid"][: 1 + i % 2],
        }
        if kind == "value_count":
            agg["field"] = "remote_port"
        item: dict[str, Any] = {"name": f"r{i}", "notify": ["hook"], "aggregate": agg}
        item.update(FILTERS[filtered])
        raw.append(item)
    return config(tmp, *raw).aggregate_rules


def _key(alerts: list[Any]) -> list[_Alert]:
    return [
        (
            a.rule,
            tuple(a.group.values()),
            a.count,
            a.first_time,
            a.last_time,
            tuple(sorted(json.dumps(dict(r), sort_keys=True) for r in a.sample)),
        )
        for a in alerts
    ]


_EVENTS = st.lists(
    st.tuples(
        st.integers(-2, 6),  # time step (log order, an older line now and then)
        st.sampled_from([1, 2]),  # pid
        st.sampled_from([0, 1, 2, 3, 4, ""]),  # remote_port ("" is not a value)
        st.integers(0, 3),  # local_port: the row's identity
        st.sampled_from([0, 1]),  # counter (0: re-logged after an osquery restart)
        st.sampled_from(["outbound", "inbound"]),
        st.sampled_from(["10.0.0.9", "8.8.8.8", ""]),  # remote_address ("": none)
        st.sampled_from(["scanner", "curl"]),  # process name
        st.sampled_from([None, 7, 8]),  # socket (None: the row lacks socket and first_seen)
        st.sampled_from(["added", "added", "removed"]),  # action (rules count added only)
    ),
    max_size=60,
)
_KINDS = st.lists(
    st.tuples(
        st.sampled_from(["event_count", "value_count"]),
        st.sampled_from([1, 2, 3, 4, 50]),  # threshold (50: grows over many batches)
        st.integers(3, 20),
        st.integers(0, len(FILTERS) - 1),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(
    kinds=_KINDS,
    items=_EVENTS,
    storage=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4)),
)
def test_aggregator_equals_reference(
    tmp_path_factory: Any,
    kinds: list[tuple[str, int, int, int]],
    items: list[Any],
    storage: tuple[int, int, int],
) -> None:
    """The aggregator, and one whose groups go through the state database every
    ``batch`` events (a change row per batch, folded every ``compact_after``) and are
    loaded into a new aggregator every ``restart_every`` batches, equal the reference
    on streams with older lines among them."""
    batch, restart_every, compact_after = storage
    tmp = tmp_path_factory.mktemp("agg")
    rules = _rules(tmp, kinds)
    reference, fast = Reference(rules), Aggregator(rules)
    conn = open_state(tmp / "state.sqlite3")
    stored = WindowStore(conn, Aggregator(rules), compact_after)
    t = 1000
    batches = 0
    for n, (step, pid, port, local, counter, direction, remote, name, socket, action) in (
        enumerate(items)
    ):
        t += step
        # With socket (and first_seen) the row has every column of a row key, which
        # the aggregator reads with one C call; without, it falls back to get().
        identity = {} if socket is None else {"socket": socket, "first_seen": 900}
        ev = event(
            t,
            counter=counter,
            pid=pid,
            remote_port=port,
            local_port=local,
            direction=direction,
            remote_address=remote,
            name=name,
            action=action,
            **identity,
        )
        want = reference.observe(ev)
        assert _key(fast.observe(ev)) == want
        assert _key(stored.aggregator.observe(ev)) == want
        if n % batch == 0:  # the pipeline's transaction of one batch
            conn.execute("BEGIN IMMEDIATE")
            stored.save(float(n))
            conn.execute("COMMIT")
            batches += 1
            if batches % restart_every == 0:  # a restart: only what was stored survives
                stored = WindowStore(conn, Aggregator(rules), compact_after)
    conn.close()
