"""Conditions users asked for (issue 12 item 5): local_port, local_address, protocol,
family, state, parent_name, parent_path; ``enabled: false``; per-rule ``severity``."""

from __future__ import annotations

from typing import Any

import pytest
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.errors import ConfigError
from alert_service.match import RuleSet, check_rule, rule_spec_from_config


def config(rule: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {
        "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        "rules": [{"name": "r", "notify": ["hook"], **rule}],
        **top,
    }


@pytest.mark.parametrize(
    ("condition", "hit", "miss"),
    [
        ({"local_port": [22, "8000-8080"]}, {"local_port": 8080}, {"local_port": 8081}),
        (
            {"local_address": {"include": ["10.0.0.0/8"]}},
            {"local_address": "10.1.2.3"},
            {"local_address": "192.0.2.1"},
        ),
        ({"protocol": [17]}, {"protocol": 17}, {"protocol": 6}),
        ({"family": [10]}, {"family": 10}, {"family": 2}),
        ({"state": ["ESTABLISHED"]}, {"state": "ESTABLISHED"}, {"state": "SYN_SENT"}),
        (  # failed attempts only, as scan detections count them
            {"status": ["refused", "timed_out", "unreachable"]},
            {"status": "refused"},
            {"status": "connected"},
        ),
        ({"status": ["<unknown>"]}, {"status": ""}, {"status": "timed_out"}),  # UDP, listeners
        (
            {"parent_name": {"exact": ["sshd"]}},
            {"parent_name": "sshd"},
            {"parent_name": "cron"},
        ),
        (
            {"parent_path": {"glob": ["/usr/sbin/*"]}},
            {"parent_path": "/usr/sbin/sshd"},
            {"parent_path": "/tmp/sshd"},
        ),
    ],
)
def test_new_condition_matches_and_misses(
    condition: dict[str, Any], hit: dict[str, Any], miss: dict[str, Any]
) -> None:
    cfg = build_config(config(condition))
    rules = RuleSet(cfg.rules)
    assert [a.rule for a in rules.match(make_event(**hit))] == ["r"]
    assert rules.match(make_event(**miss)) == []
    # also usable in an exclude entry
    vetoed = build_config(config({"exclude": [condition]}))
    assert RuleSet(vetoed.rules).match(make_event(**hit)) == []
    assert len(RuleSet(vetoed.rules).match(make_event(**miss))) == 1


@pytest.mark.parametrize(
    ("condition", "where", "message"),
    [
        ({"local_port": ["70000"]}, "$.rules[0].local_port[0]", "out of range"),
        ({"local_address": {"include": ["10.0.0/33"]}}, "$.rules[0].local_address.include[0]", ""),
        ({"protocol": [70000]}, "$.rules[0].protocol[0]", ""),
        ({"parent_name": {"regex": ["["]}}, "$.rules[0].parent_name.regex[0]", "invalid regex"),
    ],
)
def test_new_condition_bad_value_is_located(
    condition: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(config(condition))
    text = str(info.value)
    assert where in text, text
    assert message in text


def test_check_rule_locates_a_bad_local_port() -> None:
    spec = rule_spec_from_config({"name": "r", "notify": ["h"], "local_port": ["9-1"]})
    assert [e.where for e in check_rule(spec)] == [".local_port[0]"]


def test_a_disabled_rule_never_matches_and_is_still_checked() -> None:
    cfg = build_config(config({"enabled": False, "remote_port": [4444]}))
    assert RuleSet(cfg.rules).match(make_event(remote_port=4444)) == []
    with pytest.raises(ConfigError, match=r"rules\[0\].remote_port\[0\]"):
        build_config(config({"enabled": False, "remote_port": ["99999"]}))


@pytest.mark.parametrize("severity", ["info", "low", "medium", "high", "critical"])
def test_severity_reaches_the_alert(severity: str) -> None:
    cfg = build_config(config({"severity": severity}))
    (alert,) = RuleSet(cfg.rules).match(make_event())
    assert alert.severity == severity
    assert alert.as_dict()["severity"] == severity


def test_severity_is_null_unless_the_rule_sets_it_and_is_checked() -> None:
    cfg = build_config(config({}))
    (alert,) = RuleSet(cfg.rules).match(make_event())
    assert alert.severity is None
    assert alert.as_dict()["severity"] is None
    with pytest.raises(ConfigError, match=r"rules\[0\].severity"):
        build_config(config({"severity": "urgent"}))


def test_a_status_outside_the_columns_values_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(config({"status": ["refused", "closed"]}))
    assert [str(p) for p in caught.value.problems] == [
        "<config>: $.rules[0].status[1]: 'closed' is not one of "
        "['connected', 'refused', 'unreachable', 'timed_out', '<unknown>']"
    ]
