"""Stream subjects no partition filter covers (:mod:`alert_service.source.nats_coverage`),
against matching concrete subjects one by one."""

from __future__ import annotations

from itertools import product

from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.source.nats_coverage import covers, unread_subjects

LITERALS = ["a", "b"]
OTHER = "c"  # stands for every literal a pattern does not name
MAX_TOKENS = 4


def matches(pattern: str, subject: str) -> bool:
    """NATS matching of a concrete subject (no wildcards) by ``pattern``."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return i < len(have)
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


CONCRETE = [
    ".".join(tokens)
    for n in range(1, MAX_TOKENS + 3)  # a pattern has up to MAX_TOKENS + 1
    for tokens in product([*LITERALS, OTHER], repeat=n)
]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from([*LITERALS, "*"]), min_size=0, max_size=MAX_TOKENS))
    if not tokens or draw(st.booleans()):
        tokens.append(draw(st.sampled_from([*LITERALS, "*", ">"])))
    return ".".join(tokens)


@settings(max_examples=1000, deadline=None)
@given(patterns(), patterns())
def test_covers_is_subset_of_matched_subjects(filter_subject: str, subject: str) -> None:
    mine = [c for c in CONCRETE if matches(subject, c)]
    expected = all(matches(filter_subject, c) for c in mine)
    assert covers(filter_subject, subject) == expected


def test_partition_filters_against_usual_streams() -> None:
    filters = [f"osquery.part.{t}.*" for t in "0123456789abcdef"]
    assert unread_subjects(["osquery.part.>"], filters) == ["osquery.part.>"]
    assert unread_subjects(["osquery.part.*.*"], filters) == ["osquery.part.*.*"]
    assert unread_subjects(filters, filters) == []
    assert unread_subjects(["osquery.part.a.*", "osquery.part.A.*"], filters) == [
        "osquery.part.A.*"
    ]
    assert unread_subjects(["osquery.part.a.x"], filters) == []
