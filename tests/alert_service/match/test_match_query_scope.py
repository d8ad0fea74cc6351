"""Rules see only the pack's rows unless widened (issue 19 item 2).

A Fleet result log carries every query with automations from every host. The
top-level ``queries`` (default ``[tracked_connections]``) is what rules see; a rule's
own ``queries`` (``["*"]`` = every query) widens or narrows it. Only rows of the
top-level queries are typed strictly by the column contract, so another query's row
(``family: "AF_INET"``) is never a parse error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from alert_service.config import build_config
from alert_service.errors import ConfigError, ParseError
from alert_service.match import RuleSet
from alert_service.parse import parse_line

ROW = {"family": "2", "protocol": "6", "remote_address": "203.0.113.5", "remote_port": "4444"}


def line(name: str, **columns: str) -> bytes:
    doc = {
        "name": name,
        "hostIdentifier": "web-01",
        "unixTime": 1756796709,
        "columns": {**ROW, **columns},
        "action": "added",
    }
    return json.dumps(doc).encode()


def config(rules: list[dict[str, Any]], **top: Any) -> Any:
    return build_config(
        {
            "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
            "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
            "rules": [{"notify": ["hook"], **r} for r in rules],
            **top,
        }
    )


NAMES = [
    "pack_tracked_connections_tracked_connections",
    "pack/Global/tracked_connections",
    "pack/team-3/tracked_connections",
    "pack/Global/open_sockets",
    "pack_other_x",
]


def fired(cfg: Any, name: str) -> list[str]:
    (event,) = parse_line(line(name), cfg.known_packs, cfg.strict_queries)
    return [a.rule for a in RuleSet(cfg.rules).match(event)]


def test_by_default_rules_see_only_the_packs_rows() -> None:
    cfg = config([{"name": "r", "remote_port": [4444]}])
    assert cfg.queries == ("tracked_connections",)
    assert [bool(fired(cfg, n)) for n in NAMES] == [True, True, True, False, False]


def test_top_level_star_widens_every_rule() -> None:
    cfg = config([{"name": "r", "remote_port": [4444]}], queries=["*"])
    assert all(fired(cfg, n) for n in NAMES)


def test_a_rules_own_queries_widen_or_narrow_it() -> None:
    cfg = config(
        [
            {"name": "any", "queries": ["*"], "remote_port": [4444]},
            {"name": "sockets", "queries": ["open_sockets"], "remote_port": [4444]},
            {"name": "default", "remote_port": [4444]},
        ]
    )
    assert fired(cfg, "pack/Global/open_sockets") == ["any", "sockets"]
    assert fired(cfg, "pack/Global/tracked_connections") == ["any", "default"]


def test_another_querys_row_is_never_a_parse_error_and_its_integers_still_compare() -> None:
    cfg = config([{"name": "any", "queries": ["*"], "remote_port": [4444]}])
    other = line("pack/Global/other", family="AF_INET", remote_port="https", pid={"x": 1})  # type: ignore[arg-type]
    (event,) = parse_line(other, cfg.known_packs, cfg.strict_queries)
    assert event.columns["family"] == "AF_INET"
    assert event.columns["remote_port"] == "https"
    assert event.columns["pid"] == '{"x":1}'
    (typed,) = parse_line(line("pack/Global/other"), cfg.known_packs, cfg.strict_queries)
    assert typed.columns["remote_port"] == 4444
    assert fired(cfg, "pack/Global/other") == ["any"]
    # the pack's own rows are still checked strictly
    with pytest.raises(ParseError, match="family"):
        parse_line(
            line("pack/Global/tracked_connections", family="AF_INET"),
            cfg.known_packs,
            cfg.strict_queries,
        )


def test_queries_must_be_names() -> None:
    with pytest.raises(ConfigError, match=r"\$\.queries"):
        config([{"name": "r"}], queries=[])
