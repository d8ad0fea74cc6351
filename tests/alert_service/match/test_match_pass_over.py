"""Passing over rows no rule can match gives what building every event gives.

The pipeline's fast path (``Pipeline.pass_over_unmatched``, alert_service/pipeline.py:
``skim_view`` and :meth:`RuleSet.row_cannot_match` for a line of the contract's
columns, :func:`~alert_service.parse.line.event_form_row` and
:meth:`RuleSet.cannot_match` for another, :meth:`BaselineTracker.unmatched`)
against its reference, the same pipeline building every event (full ``parse_line``,
``RuleSet.match`` and ``BaselineTracker.apply``), on random rules and random lines:
the same alerts (digests included), every counter, the baseline's tables and the
missing-column watch.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, replace
from typing import Any

from deliver_support import make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_match_index import ADDRESSES, ioc_files, rule_sets

from alert_service.config import Config
from alert_service.match import Alert, RuleSpec
from alert_service.match.conditions import EventView, skim_view
from alert_service.match.index import RuleIndex
from alert_service.parse import Event, parse_line
from alert_service.parse.line import event_form_row, event_of_row
from alert_service.pipeline import Pipeline
from alert_service.source.records import FileIdentity, LineChunk
from alert_service.state.baseline import BaselineTracker
from alert_service.state.db import open_state
from alert_service.stats import Stats

__all__ = ["ioc_files"]  # the IOC files the random rules name (autouse fixture)

NAMES = ["pack_tracked_connections_tracked_connections", "pack/Global/x", "other"]
COLUMN_VALUES: dict[str, list[Any]] = {
    "remote_address": [*ADDRESSES[:12], "", "c\\x41rl"],
    "remote_port": ["22", "443", "445", "8443", "6665", "", "70000", "-1", "0443", "x", 443],
    "name": ["curl", "python3", "sshd", "nginx", "", "c\\x75rl", "zsh"],
    "path": ["/usr/bin/curl", "/usr/sbin/sshd", ""],
    "cmdline": ["curl -fsSL x", "sshd: alice", ""],
    "username": ["alice", "root", ""],
    "uid": ["0", "1000", "1500", "65534", "", "1e3"],
    "direction": ["inbound", "outbound", "listening", ""],
    "local_address": ["10.1.2.3", "192.0.2.9", ""],
    "local_port": ["22", "443", "50000"],
    "protocol": ["6", "17", ""],
    "family": ["2", "10"],
    "state": ["ESTABLISHED", "LISTEN", ""],
    "parent_name": ["bash", "sshd", ""],
    "parent_path": ["/usr/bin/bash", ""],
}


@st.composite
def full_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A row with every column a rule may need, none empty: it settles the column watch,
    after which the fast path may pass rows over."""
    return {
        column: draw(st.sampled_from([v for v in values if v and v.__class__ is str]))
        for column, values in COLUMN_VALUES.items()
    }


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for column, values in COLUMN_VALUES.items():
        if draw(st.integers(0, 5)):  # mostly present
            columns[column] = draw(st.sampled_from(values))
    return columns


@st.composite
def lines(draw: st.DrawFn, pool: list[dict[str, Any]] | None = None) -> bytes:
    """One line; its row from ``pool`` when given (rows added, removed, re-logged)."""
    kind = draw(st.sampled_from(["event"] * 12 + ["batch", "junk", "blank"]))
    if kind == "junk":
        return draw(st.sampled_from([b"not json", b'{"name": 1}', b"[1]", b'{"name":"x"']))
    if kind == "blank":
        return b""
    columns = draw(st.sampled_from(pool)) if pool else draw(rows())
    doc: dict[str, Any] = {
        "name": draw(st.sampled_from(NAMES if pool is None else NAMES[:1] * 4 + NAMES[1:])),
        "hostIdentifier": draw(st.sampled_from(["web-01", "web-02"])),
        "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
        "unixTime": draw(st.integers(100, 103)),
        "epoch": draw(st.integers(0, 1)),
        "counter": draw(st.sampled_from([0, 1, 2])),
        "numerics": False,
    }
    action = draw(st.sampled_from(["added", "removed", "snapshot", "gone"]))
    if kind == "batch":
        doc["diffResults"] = {action: [columns]}
    else:
        doc["columns"] = columns
        doc["action"] = action
    if draw(st.booleans()):
        doc["decorations"] = {"hostname": draw(st.sampled_from(["nginx", "h\\x41"]))}
    text = json.dumps(doc, separators=(",", ":"))
    return text.replace("\\\\x", "\\x").encode()  # some osquery \xNN escapes as logged


@st.composite
def configs(draw: st.DrawFn) -> Config:
    rules: list[RuleSpec] = [
        replace(rule, baseline=draw(st.sampled_from(["alert", "digest", "none"])))
        for rule in draw(rule_sets())
    ]
    return Config(file="test", sources=(), notifiers=(), rules=tuple(rules))


class _Kept:
    def __init__(self) -> None:
        self.alerts: list[Any] = []

    def dispatch(self, alert: Any) -> None:
        self.alerts.append(alert)

    def close(self) -> None:
        pass


def _run(config: Config, chunks: list[list[bytes]], fast: bool) -> dict[str, Any]:
    kept = _Kept()
    pipeline = Pipeline(config, kept)
    pipeline.pass_over_unmatched = fast
    identity = FileIdentity(1, 2)
    start = 0
    for chunk_lines in chunks:
        pipeline._replay_chunk(LineChunk(identity, "log", start, chunk_lines))
        start += sum(len(line) + 1 for line in chunk_lines)
    tracker = pipeline._replay_tracker()
    tables = {
        table: sorted(tracker.conn.execute(f"SELECT * FROM {table}").fetchall())
        for table in ("active_rows", "baseline_runs")
    }
    return {
        "alerts": [(type(a).__name__, a.id, a.rule, a.notify) for a in kept.alerts],
        "stats": asdict(pipeline.stats),
        "tables": tables,
        "missing": pipeline.columns.missing,
    }


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=configs(),
    data=st.data(),
    cuts=st.lists(st.integers(1, 29), max_size=3),
)
def test_passing_over_unmatched_rows_equals_building_every_event(
    config: Config, data: st.DataObject, cuts: list[int]
) -> None:
    pool = data.draw(st.lists(full_rows() | rows(), min_size=1, max_size=4))
    settle = [
        json.dumps(
            {"name": name, "hostIdentifier": "web-01", "unixTime": 99, "columns": columns}
            | {"action": "added", "counter": 1},
            separators=(",", ":"),
        ).encode()
        for name in NAMES
        for columns in [data.draw(full_rows())]
    ]
    log = settle + data.draw(st.lists(lines(pool), min_size=1, max_size=30))
    bounds = sorted({0, len(log), *(c for c in cuts if c < len(log))})
    chunks = [log[a:b] for a, b in itertools.pairwise(bounds)]
    assert _run(config, chunks, fast=True) == _run(config, chunks, fast=False)


def test_a_passed_over_line_ends_the_open_run_of_its_host_and_query() -> None:
    """A counter-0 run, then a line of a later run: both passed over (no rule), the
    run is closed as ``apply`` closes it, and none stays open."""
    config = Config(
        file="test",
        sources=(),
        notifiers=(),
        rules=(RuleSpec(name="r", notify=("n",), remote_port=(1,)),),
    )
    row = {column: values[0] for column, values in COLUMN_VALUES.items()}
    log = [
        json.dumps(
            {"name": NAMES[0], "hostIdentifier": "web-01", "unixTime": t, "columns": row}
            | {"action": "added", "counter": counter},
            separators=(",", ":"),
        ).encode()
        for t, counter in ((99, 1), (100, 0), (101, 0), (160, 1), (170, 0))
    ]
    fast, reference = _run(config, [log], fast=True), _run(config, [log], fast=False)
    assert fast == reference
    assert reference["tables"]["baseline_runs"] == [("web-01", NAMES[0], 0, 170, 1)]
    assert [r[4] for r in _run(config, [log[:4]], fast=True)["tables"]["baseline_runs"]] == [0]


@settings(max_examples=300, deadline=None)
@given(line=lines())
def test_event_form_row_is_the_single_event_parse_line_gives(line: bytes) -> None:
    found = event_form_row(line)
    if found is None:
        return
    head, action, row = found
    (event,) = parse_line(line, frozenset({"tracked_connections"}), frozenset({"x"}))
    assert (event.name, event.host_identifier, event.unix_time, event.epoch, event.counter) == (
        head.name,
        head.host_identifier,
        head.unix_time,
        head.epoch,
        head.counter,
    )
    assert event.action == action
    assert dict(event.columns.items()) == dict(row.items())
    assert parse_line(line) == [event]  # strict everywhere: the row passed the check
    rebuilt = event_of_row(head, action, row, frozenset({"tracked_connections"}))
    assert rebuilt == event
    assert (rebuilt.pack, rebuilt.query, rebuilt.decorations) == (
        event.pack,
        event.query,
        event.decorations,
    )


def test_a_view_of_a_row_reads_what_the_index_reads() -> None:
    found = event_form_row(
        b'{"name":"q","hostIdentifier":"h","unixTime":1,"action":"removed",'
        b'"columns":{"remote_address":"::ffff:192.0.2.9","remote_port":"443"}}'
    )
    assert found is not None
    _, action, row = found
    view = EventView.of_row(row, action)
    assert (view.action, view.columns.get("remote_port"), view.remote_number) == (
        "removed",
        443,
        0xC0000209,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=configs(), batch=st.lists(lines(), min_size=1, max_size=8))
def test_the_index_reads_a_skimmed_line_as_its_event(rules: Config, batch: list[bytes]) -> None:
    """The index's answer for a :class:`SkimView` is its answer for the line's event
    (as its own action and, ``removed``, as ``added``), and so is the peer's number."""
    index = RuleIndex([rule.keys for rule in Pipeline(rules).rules.rules if rule.spec.enabled])
    for line in batch:
        skimmed = skim_view(line)
        if skimmed is None:
            continue
        (event,) = parse_line(line)
        view = EventView(event)
        assert skimmed.remote_number == view.remote_number
        if event.action == "removed":
            expected = index.candidates_pair(view, "added") == (0, 0)
        else:
            expected = index.candidates(view) == 0
        assert index.none_possible(skimmed) is expected


@st.composite
def baseline_steps(draw: st.DrawFn) -> tuple[Event, bool]:
    """An event and whether a rule matched it (both trackers get those through apply)."""
    event = make_event(
        host=draw(st.sampled_from(["web-01", "web-02"])),
        query_name=draw(st.sampled_from(NAMES[:2])),
        action=draw(st.sampled_from(["added", "added", "removed", "snapshot"])),
        counter=draw(st.sampled_from([0, 0, 1])),
        unix_time=draw(st.integers(100, 103)),
        columns={"remote_port": draw(st.integers(1, 3))},
    )
    return replace(event, epoch=draw(st.integers(0, 1))), draw(st.integers(0, 3)) == 0


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(baseline_steps(), min_size=1, max_size=25))
def test_baseline_unmatched_equals_apply_without_alerts(steps: list[tuple[Event, bool]]) -> None:
    """``unmatched`` from the fields equals ``apply(event, [])`` of an event matching
    nothing, whatever rows and runs earlier matched events left; and, the tracker
    being its database's only writer, leaving it out while no run is open
    (``open_runs`` 0) for a line with ``counter`` > 0 changes nothing either."""
    trackers = []
    for exclusive in (True, False):
        stats = Stats()
        tracker = BaselineTracker(
            open_state(":memory:"),
            {},
            lambda e: e.columns.get("remote_port") == 1,
            stats,
            exclusive=exclusive,
        )
        trackers.append((tracker, stats))
    (fast, fast_stats), (reference, reference_stats) = trackers
    for event, matched in steps:
        if matched or (event.action == "removed" and event.columns.get("remote_port") == 1):
            alerts = [Alert("id", "r", ("n",), event)] if matched else []
            assert fast.apply(event, alerts) == reference.apply(event, alerts)
            continue
        assert reference.apply(event, []) == []
        if event.counter == 0 or fast.open_runs:
            fast.unmatched(
                event.host_identifier,
                event.name,
                event.action,
                event.counter,
                event.epoch,
                event.unix_time,
            )
        for table in ("active_rows", "baseline_runs"):
            query = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
            assert fast.conn.execute(query).fetchall() == reference.conn.execute(query).fetchall()
        count = "SELECT COUNT(*) FROM baseline_runs WHERE open = 1"
        assert fast.open_runs == fast.conn.execute(count).fetchone()[0]
        assert reference.open_runs == 1  # not exclusive: not counted
    assert asdict(fast_stats) == asdict(reference_stats)
