"""A rule's ``severity`` reaches every notifier (issue 12 item 5)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from deliver_support import make_event

from alert_service.match import Alert, Severity, alert_id
from alert_service.notify import PagerDutyNotifier, SlackNotifier, TeamsNotifier, WebhookNotifier
from alert_service.secret import Secret


def alert(severity: Severity | None) -> Alert:
    event = make_event()
    return Alert(alert_id(event), "reverse-shell", ("n",), event, severity=severity)


def pagerduty(**options: Any) -> PagerDutyNotifier:
    return PagerDutyNotifier.from_config("pd", {"routing_key": Secret("K", "env:PD"), **options})


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("critical", "critical"),
        ("high", "error"),
        ("medium", "warning"),
        ("low", "warning"),
        ("info", "info"),
    ],
)
def test_pagerduty_maps_the_rules_severity(severity: Severity, expected: str) -> None:
    payload = pagerduty(severity="info").render(alert(severity))["payload"]
    assert payload["severity"] == expected
    assert payload["custom_details"]["severity"] == severity
    assert payload["summary"].startswith(f"{severity.upper()} [reverse-shell]")


def test_pagerduty_uses_its_own_option_when_the_rule_has_none() -> None:
    assert pagerduty(severity="error").render(alert(None))["payload"]["severity"] == "error"
    assert pagerduty().render(alert(None))["payload"]["severity"] == "warning"


def test_slack_shows_the_severity_in_colour_and_text() -> None:
    slack = SlackNotifier.from_config(
        "s", {"url": Secret("https://hooks.slack.example/x", "env:S")}
    )
    high = slack.render(alert("high"))
    header = high["blocks"][0]["text"]["text"]
    assert header.startswith(":large_orange_circle: *HIGH* ")
    assert high["text"].startswith("HIGH [reverse-shell]")
    assert "*Severity*\nhigh" in json.dumps(high["blocks"][1], ensure_ascii=False).replace(
        "\\n", "\n"
    )
    assert slack.render(alert("critical"))["blocks"][0]["text"]["text"].startswith(":red_circle:")
    plain = slack.render(alert(None))
    assert plain["blocks"][0]["text"]["text"].startswith(":rotating_light: *reverse-shell*")
    assert "Severity" not in json.dumps(plain)


@pytest.mark.parametrize(
    ("severity", "colour"),
    [
        ("critical", "Attention"),
        ("high", "Attention"),
        ("medium", "Warning"),
        ("low", "Accent"),
        ("info", "Default"),
    ],
)
def test_teams_colours_the_title_by_severity(severity: Severity, colour: str) -> None:
    teams = TeamsNotifier.from_config(
        "t", {"url": Secret("https://flow.example/x", "env:T"), "envelope": "card"}
    )
    card = teams.render(alert(severity))
    title = card["body"][0]["inlines"]
    assert title[0]["text"] == f"{severity.upper()} "
    assert {run.get("color") for run in title if run.get("color")} == {colour}
    assert "Severity" in json.dumps(card["body"])


def test_webhook_carries_the_severity_field() -> None:
    hook = WebhookNotifier.from_config("w", {"url": "http://127.0.0.1:9/x"})
    assert hook.render(alert("low"))["severity"] == "low"
    assert hook.render(alert(None))["severity"] is None
