"""A renamed or missing column must not blind rules silently (issue 12 item 3).

When the rows of a query a rule sees lack a column the rule needs (after a pack
change renamed it), the service warns once per (query, column), sets a gauge and
reports ``/health`` degraded. A value such as ``"pid": "None"`` is missing, and a
line is never dropped for that.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.match import RuleSet
from alert_service.match.columns import ROWS_BEFORE_MISSING, ColumnWatch
from alert_service.parse import parse_line


def config(rules: list[dict[str, Any]]) -> Any:
    return build_config(
        {
            "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            "rules": [{"notify": ["hook"], **r} for r in rules],
        }
    )


def test_rules_say_which_columns_they_need() -> None:
    cfg = config(
        [
            {"name": "a", "remote_address": {"include": ["10.0.0.0/8"]}, "local_port": [22]},
            {"name": "b", "process": {"cmdline": {"glob": ["*x*"]}}, "user": {"uid": [0]}},
            {"name": "off", "enabled": False, "parent_path": {"exact": ["/x"]}},
        ]
    )
    watch = ColumnWatch(cfg.rules)
    assert watch.needed_by("pack_tracked_connections_tracked_connections") == {
        "remote_address": ("a",),
        "local_port": ("a",),
        "cmdline": ("b",),
        "uid": ("b",),
    }
    assert watch.needed_by("pack/Global/other") == {}  # no rule sees it


def test_a_renamed_column_is_reported_once_then_clears(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config([{"name": "peer", "remote_address": {"include": ["198.51.100.0/24"]}}])
    watch = ColumnWatch(cfg.rules)
    rules = RuleSet(cfg.rules)
    renamed = make_event(remote_address="<drop>", peer_address="198.51.100.7")
    with caplog.at_level(logging.WARNING):
        for _ in range(ROWS_BEFORE_MISSING * 3):
            watch.observe(renamed)
            assert rules.match(renamed) == []
    warnings = [r for r in caplog.records if r.getMessage() == "rule_column_missing"]
    assert len(warnings) == 1
    assert warnings[0].__dict__["alert_fields"]["column"] == "remote_address"
    assert warnings[0].__dict__["alert_fields"]["rules"] == ["peer"]
    key = ("pack_tracked_connections_tracked_connections", "remote_address")
    assert watch.missing == {key: ("peer",)}
    watch.observe(make_event())  # the column is back
    assert watch.missing == {}


def test_a_column_some_rows_lack_is_not_reported() -> None:
    cfg = config([{"name": "proc", "process": {"name": {"exact": ["nc"]}}}])
    watch = ColumnWatch(cfg.rules)
    watch.observe(make_event(name="nc"))
    for _ in range(ROWS_BEFORE_MISSING * 2):
        watch.observe(make_event(name="<drop>"))  # unattributed sockets
    assert watch.missing == {}


def test_none_text_is_missing_and_the_line_is_kept() -> None:
    line = json.dumps(
        {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": "h",
            "unixTime": 1,
            "columns": {"pid": "None", "uid": "None", "remote_port": "4444"},
            "action": "added",
        }
    )
    (event,) = parse_line(line)
    assert event.columns["pid"] is None
    assert event.columns["uid"] is None
    assert event.columns["remote_port"] == 4444
