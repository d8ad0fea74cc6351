"""The indexed rule set matches exactly what trying every rule matches (reference.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deliver_support import make_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import matching_rules

from alert_service.match import (
    UNKNOWN,
    AddressSpec,
    ConditionsSpec,
    EventView,
    ProcessSpec,
    RuleSet,
    RuleSpec,
    TextPatternSpec,
    UserSpec,
)
from alert_service.match import index as index_module
from alert_service.match.index import RuleIndex
from alert_service.match.ranges import IntRanges
from alert_service.parse import Event

IOC_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / f"tc-match-index-{os.getpid()}"
IOC_FILES = {
    "bad4.txt": "# known bad\n198.51.100.7\n203.0.113.0/25  # a range\n10.9.0.0/16\n",
    "bad6.txt": "2001:db8:bad::/48\n192.0.2.0/24\n",
}


@pytest.fixture(scope="module", autouse=True)
def ioc_files() -> Iterator[None]:
    IOC_DIR.mkdir(exist_ok=True)
    for name, text in IOC_FILES.items():
        (IOC_DIR / name).write_text(text, encoding="utf-8")
    yield
    for name in IOC_FILES:
        (IOC_DIR / name).unlink()
    IOC_DIR.rmdir()


ADDRESSES = [
    "198.51.100.7",
    "198.51.100.8",
    "203.0.113.5",
    "203.0.113.200",
    "10.9.1.1",
    "10.1.2.3",
    "192.0.2.9",
    "::ffff:192.0.2.9",
    "::ffff:10.9.3.3",
    "2001:db8:bad::1",
    "2001:db8:beef::1",
    "93.184.216.34",
    "0.0.0.0",
    "::",
    "",
    "not-an-address",
    "fe80::1%eth0",
]
CIDRS = [
    "10.0.0.0/8",
    "10.9.0.0/16",
    "203.0.113.0/24",
    "198.51.100.7",
    "::ffff:0:0/96",
    "2001:db8::/32",
    "192.0.2.0/28",
    "0.0.0.0/0",
]
PORTS: list[int | str] = [22, 53, 443, 8443, "440-450", "6660-6669", "0-1023", "8000-8999"]
NAMES = ["curl", "python3", "sshd", "nginx", "", UNKNOWN]
GLOBS = ["c*", "*sh*", "py?hon3", "/usr/*/curl", "[cn]*", UNKNOWN, "*"]
REGEXES = ["cu.l", "(cu)rl", "(?i)CURL", "ss?hd", r"/usr/(s?bin)/\w+", "python[0-9]*", "x|y"]
UIDS: list[int | str] = [0, 1000, "1000-1999", "65534", "0-99"]
DIRECTIONS = ["inbound", "outbound", "listening", UNKNOWN]

texts = st.builds(
    TextPatternSpec,
    exact=st.lists(st.sampled_from([*NAMES, "/usr/bin/curl"]), max_size=2).map(tuple),
    glob=st.lists(st.sampled_from(GLOBS), max_size=2).map(tuple),
    regex=st.lists(st.sampled_from(REGEXES), max_size=2).map(tuple),
)
addresses = st.builds(
    AddressSpec,
    include=st.lists(st.sampled_from(CIDRS), max_size=3).map(tuple),
    exclude=st.lists(st.sampled_from(CIDRS), max_size=2).map(tuple),
    include_files=st.lists(st.sampled_from([str(IOC_DIR / n) for n in IOC_FILES]), max_size=2).map(
        tuple
    ),
    exclude_files=st.lists(st.sampled_from([str(IOC_DIR / "bad6.txt")]), max_size=1).map(tuple),
)


def conditions() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "actions": st.lists(
                st.sampled_from(["added", "removed", "snapshot"]), min_size=1, max_size=2
            ).map(tuple),
            "queries": st.lists(
                st.sampled_from(["tracked_connections", "other", "pack/Global/x", "*"]),
                min_size=1,
                max_size=2,
            ).map(tuple),
            "host": texts,
            "process": st.builds(
                ProcessSpec,
                name=st.none() | texts,
                path=st.none() | texts,
                cmdline=st.none() | texts,
            ),
            "user": st.builds(
                UserSpec,
                name=st.none() | texts,
                uid=st.none() | st.lists(st.sampled_from(UIDS), min_size=1, max_size=3).map(tuple),
            ),
            "remote_address": addresses,
            "remote_port": st.lists(st.sampled_from(PORTS), min_size=1, max_size=3).map(tuple),
            "direction": st.lists(st.sampled_from(DIRECTIONS), min_size=1, max_size=2).map(tuple),
            "local_address": addresses,
            "local_port": st.lists(st.sampled_from(PORTS), min_size=1, max_size=2).map(tuple),
            "protocol": st.lists(st.sampled_from([6, 17, "1-6"]), min_size=1, max_size=2).map(
                tuple
            ),
            "family": st.lists(st.sampled_from([2, 10]), min_size=1, max_size=2).map(tuple),
            "state": st.lists(
                st.sampled_from(["ESTABLISHED", "LISTEN", UNKNOWN]), min_size=1, max_size=2
            ).map(tuple),
            "parent_name": texts,
            "parent_path": texts,
        },
    )


@st.composite
def rule_sets(draw: st.DrawFn) -> list[RuleSpec]:
    rules: list[RuleSpec] = []
    for i in range(draw(st.integers(1, 8))):
        main = draw(conditions())
        excludes = tuple(
            ConditionsSpec(**draw(conditions())) for _ in range(draw(st.integers(0, 2)))
        )
        enabled = draw(st.sampled_from([True, True, True, False]))
        rules.append(
            RuleSpec(name=f"r{i}", notify=("n",), exclude=excludes, enabled=enabled, **main)
        )
    return rules


def maybe(values: list[Any]) -> st.SearchStrategy[Any]:
    """A value of ``values``, None, or the column left out (``...``)."""
    return st.sampled_from([*values, None, ...])


@st.composite
def events(draw: st.DrawFn) -> Event:
    row = {
        "remote_address": draw(maybe(ADDRESSES)),
        "remote_port": draw(maybe([22, 443, 445, 8443, 6665, 8080, 0, 70000, True, "443"])),
        "name": draw(maybe(["curl", "python3", "sshd", "nginx", "CURL", "", "zsh", 7])),
        "path": draw(maybe(["/usr/bin/curl", "/usr/sbin/sshd", "/opt/x/python3", ""])),
        "cmdline": draw(maybe(["curl -fsSL x", "sshd: alice", "", "y"])),
        "username": draw(maybe(["alice", "root", "", "curl"])),
        "uid": draw(maybe([0, 50, 1000, 1500, 65534, 2000, False])),
        "direction": draw(maybe(["inbound", "outbound", "listening", "", "sideways"])),
        "local_address": draw(maybe(ADDRESSES)),
        "local_port": draw(maybe([22, 443, 445, 50000])),
        "protocol": draw(maybe([6, 17, 1, 0])),
        "family": draw(maybe([2, 10, 1])),
        "state": draw(maybe(["ESTABLISHED", "LISTEN", "TIME_WAIT", ""])),
        "parent_name": draw(maybe(["bash", "sshd", "", "curl"])),
        "parent_path": draw(maybe(["/usr/bin/bash", "/usr/sbin/sshd", ""])),
    }
    columns = {k: v for k, v in row.items() if v is not ...}
    return make_event(
        action=draw(st.sampled_from(["added", "removed", "snapshot"])),
        host=draw(st.sampled_from(["web-01", "curl", ""])),
        query_name=draw(
            st.sampled_from(
                ["pack_tracked_connections_tracked_connections", "pack/Global/x", "other"]
            )
        ),
        decorations=draw(st.sampled_from([{}, {"hostname": "nginx"}, {"fqdn": ""}])),
        columns=columns,
        counter=1,
        calendar_time="",
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), batch=st.lists(events(), min_size=1, max_size=6))
def test_indexed_rule_set_equals_the_reference(rules: list[RuleSpec], batch: list[Event]) -> None:
    rule_set = RuleSet(rules)
    for event in batch:
        assert [a.rule for a in rule_set.match(event)] == matching_rules(rules, event)
        as_added = bool(matching_rules(rules, event, "added"))
        assert rule_set.matches_as(event, "added") is as_added


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=rule_sets(),
    batch=st.lists(events(), min_size=2, max_size=6),
    order=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["match", "added", "removed"]))),
)
def test_matches_as_equals_the_reference_in_any_order(
    rules: list[RuleSpec], batch: list[Event], order: list[tuple[int, str]]
) -> None:
    """``matches_as`` after ``match`` of the same event uses the candidates found
    there; asked of another event, or after other events, it must not."""
    rule_set = RuleSet(rules)
    for index, what in order:
        event = batch[index % len(batch)]
        if what == "match":
            assert [a.rule for a in rule_set.match(event)] == matching_rules(rules, event)
        else:
            expected = bool(matching_rules(rules, event, what))  # type: ignore[arg-type]
            assert rule_set.matches_as(event, what) is expected  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets(), batch=st.lists(events(), min_size=1, max_size=6))
def test_remembered_lookups_and_none_possible_equal_the_reference(
    rules: list[RuleSpec], batch: list[Event]
) -> None:
    """The pattern lookups remembered per value (read again on the second and third
    pass) and ``none_possible`` against trying every rule."""
    rule_set = RuleSet(rules)
    index = RuleIndex([rule.keys for rule in rule_set.rules if rule.spec.enabled])
    for _ in range(3):
        for event in batch:
            assert [a.rule for a in rule_set.match(event)] == matching_rules(rules, event)
            view = EventView(event)
            if event.action == "removed":
                expected = index.candidates_pair(view, "added") == (0, 0)
            else:
                expected = index.candidates(view) == 0
            assert index.none_possible(EventView(event)) is expected
            if expected:
                assert not matching_rules(rules, event)
                assert event.action != "removed" or not matching_rules(rules, event, "added")


def test_remembered_lookups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "PATTERN_CACHE_ENTRIES", 2)
    rule = RuleSpec(
        name="c", notify=("n",), process=ProcessSpec(name=TextPatternSpec(glob=("c*",)))
    )
    rule_set = RuleSet([rule])
    names = ["curl", "zsh", "cat", "ssh", "cc", "curl", "bash", "cat"]
    for _ in range(2):
        got = [bool(rule_set.match(make_event(columns={"name": name}))) for name in names]
        assert got == [name.startswith("c") for name in names]


def test_an_event_meets_only_the_rules_its_values_can_match() -> None:
    rules = [
        RuleSpec(name=f"port-{port}", notify=("n",), remote_port=(port,)) for port in range(1, 101)
    ]
    rule_set = RuleSet(rules)
    index = RuleIndex([rule.keys for rule in rule_set.rules])
    view_event = make_event(columns={"remote_port": 42, "remote_address": "192.0.2.1"})
    assert index.candidates(EventView(view_event)) == 1 << 41
    removed = make_event(action="removed", columns={"remote_port": 42})
    assert index.candidates(EventView(removed)) == 0  # default actions: added only
    assert [a.rule for a in rule_set.match(view_event)] == ["port-42"]


def test_the_index_follows_an_ioc_file_reload(tmp_path: Path) -> None:
    path = tmp_path / "iocs.txt"
    path.write_text("198.51.100.7\n", encoding="utf-8")
    rule = RuleSpec(
        name="ioc", notify=("n",), remote_address=AddressSpec(include_files=(str(path),))
    )
    rule_set = RuleSet([rule], ioc_check_interval_secs=3600)
    old = make_event(columns={"remote_address": "198.51.100.7"})
    new = make_event(columns={"remote_address": "203.0.113.9"})
    assert [a.rule for a in rule_set.match(old)] == ["ioc"]
    assert rule_set.match(new) == []
    path.write_text("203.0.113.0/24\n# longer, so the size changes too\n", encoding="utf-8")
    assert rule_set.refresh() == 1
    assert rule_set.match(old) == []
    assert [a.rule for a in rule_set.match(new)] == ["ioc"]


span_lists = st.lists(
    st.tuples(st.integers(-3, 60), st.integers(-3, 60)).map(lambda t: (min(t), max(t))),
    max_size=12,
)


def chain(steps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges in ascending order, each ``gap`` after the previous end (0: touching,
    negative: overlapping) and ``length`` long (negative: reversed)."""
    spans: list[tuple[int, int]] = []
    after = 0
    for gap, length in steps:
        low = after + gap
        spans.append((low, low + length))
        after = low + length + 1
    return spans


chains = st.lists(st.tuples(st.integers(-2, 3), st.integers(-1, 3)), max_size=12).map(chain)


@settings(max_examples=500, deadline=None)
@given(
    sets=st.lists(st.tuples(st.integers(0, 7), span_lists | chains), min_size=1, max_size=3),
    merge=st.booleans(),
)
def test_segments_equal_the_sweep(
    sets: list[tuple[int, list[tuple[int, int]]]], merge: bool
) -> None:
    # Merged ranges (what the index passes) and others (overlapping, touching,
    # unsorted, reversed: the direct cut must hand those to the sweep).
    if merge:
        sets = [(mask, IntRanges((min(s), max(s)) for s in spans).spans()) for mask, spans in sets]
    assert index_module._segments(sets) == index_module._merged_segments(sets)


@given(mask=st.integers(1, 255), spans=span_lists)
def test_one_set_of_merged_ranges_is_cut_directly(mask: int, spans: list[tuple[int, int]]) -> None:
    merged = IntRanges(spans).spans()
    direct = index_module._one_set_segments(mask, merged)
    assert direct is not None
    assert direct == index_module._merged_segments([(mask, merged)])
    if merged:
        assert index_module._one_set_segments(mask, [merged[0], merged[0]]) is None
