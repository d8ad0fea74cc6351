"""Alerts name the host the way people do (issue 12 item 2).

A Fleet result line is logged under the host's UUID (``hostIdentifier``); the name
sits in the decorations Fleet's default decorators add (``hostname``, ``host_uuid``).
Alerts lead with the name and keep the identifier and UUID beside it; host rules
match any of them.
"""

from __future__ import annotations

import pytest
from deliver_support import make_alert, make_event

from alert_service.match import HOST_FIELDS, RuleSet, RuleSpec, TextPatternSpec, host_names
from alert_service.notify import PagerDutyNotifier, SlackNotifier, TeamsNotifier
from alert_service.secret import Secret

UUID = "4C4C4544-0058-3510-8052-B4C04F4E4B31"


@pytest.mark.parametrize(
    ("identifier", "decorations", "expected"),
    [
        (UUID, {"host_uuid": UUID, "hostname": "web-01"}, ("web-01", UUID, UUID)),
        (
            UUID,
            {"hostname": "web-01", "fqdn": "web-01.corp.example"},
            ("web-01.corp.example", UUID, UUID),
        ),
        (UUID, {"computer_name": "Web 01"}, ("Web 01", UUID, UUID)),
        ("web-01", {}, ("web-01", "web-01", None)),
        (UUID.lower(), {}, (UUID.lower(), UUID.lower(), UUID.lower())),
        ("web-01", {"host_uuid": UUID}, ("web-01", "web-01", UUID)),
    ],
)
def test_host_names(
    identifier: str, decorations: dict[str, str], expected: tuple[str, str, str | None]
) -> None:
    names = host_names(make_event(host=identifier, decorations=decorations))
    assert (names.name, names.identifier, names.uuid) == expected


def test_the_payload_names_the_host_and_keeps_identifier_and_uuid() -> None:
    event = make_event(host=UUID, decorations={"host_uuid": UUID, "hostname": "web-01"})
    (alert,) = RuleSet([RuleSpec(name="r", notify=("hook",))]).match(event)
    doc = alert.as_dict()
    assert (doc["host_name"], doc["host"], doc["host_uuid"]) == ("web-01", UUID, UUID)


def test_host_rules_match_the_name_the_identifier_or_the_uuid() -> None:
    assert HOST_FIELDS == ("hostIdentifier", "hostname", "fqdn", "computer_name", "host_uuid")
    event = make_event(
        host="web-01", decorations={"host_uuid": UUID, "fqdn": "web-01.corp.example"}
    )
    for pattern in ("web-01", UUID, "web-01.corp.example"):
        rules = RuleSet([RuleSpec(name="r", notify=("h",), host=TextPatternSpec(exact=(pattern,)))])
        assert len(rules.match(event)) == 1, pattern
    other = RuleSet([RuleSpec(name="r", notify=("h",), host=TextPatternSpec(exact=("db-01",)))])
    assert other.match(event) == []


def test_chat_and_paging_lead_with_the_name() -> None:
    alert = make_alert(host=UUID, decorations={"host_uuid": UUID, "hostname": "web-01"})
    slack = SlackNotifier.from_config(
        "s", {"url": Secret("https://hooks.slack.example/x", "env:S")}
    )
    body = slack.render(alert)
    assert body["text"].startswith("[reverse-shell] web-01:") or "web-01:" in body["text"]
    facts = str(body["blocks"][1])
    assert "web-01" in facts and UUID in facts
    teams = TeamsNotifier.from_config("t", {"url": Secret("https://flow.example/x", "env:T")})
    assert "web-01" in str(teams.render(alert)) and UUID in str(teams.render(alert))
    pd = PagerDutyNotifier.from_config("p", {"routing_key": Secret("R0UTINGKEY", "env:PD")})
    payload = pd.render(alert)["payload"]
    assert payload["source"] == "web-01"
    assert payload["custom_details"]["host_uuid"] == UUID
