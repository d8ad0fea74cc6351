"""Notifiers' pure ``render``/``render_digest`` against golden JSON files.

The golden files (tests/alert_service/golden/*.json) were reviewed by hand; regenerate
them with ``UPDATE_GOLDEN=1 pytest tests/alert_service/test_notify_golden.py`` after an
intended change and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from deliver_support import make_alert

from alert_service.match import Alert
from alert_service.notify import (
    DEFAULT_REGISTRY,
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
    encode_json,
)
from alert_service.notify.literal import fit, literal
from alert_service.secret import Secret

GOLDEN = Path(__file__).resolve().parent / "golden"
NASTY_NAME = "nc<b>&ü"
NASTY_CMDLINE = 'nc -e /bin/sh <!channel> <@U123> & `id` ```x``` — ünïcode 🐍 "q" \\ end'


def nasty_alert(**kw: Any) -> Alert:
    return make_alert(name=NASTY_NAME, cmdline=NASTY_CMDLINE, **kw)


def notifiers() -> dict[str, Notifier]:
    return {
        "webhook": WebhookNotifier.from_config("hook", {"url": "http://127.0.0.1:9/x"}),
        "slack": SlackNotifier.from_config(
            "slack", {"url": Secret("https://hooks.slack.example/T/B/X", "env:S")}
        ),
        "teams": TeamsNotifier.from_config(
            "teams", {"url": Secret("https://flow.example/x?sig=1", "env:T")}
        ),
        "teams_card": TeamsNotifier.from_config(
            "teams", {"url": Secret("https://flow.example/x", "env:T"), "envelope": "card"}
        ),
        "pagerduty": PagerDutyNotifier.from_config(
            "pd", {"routing_key": Secret("R0UTINGKEY", "env:PD"), "severity": "error"}
        ),
    }


def check_golden(name: str, payload: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), name


@pytest.mark.parametrize("kind", ["webhook", "slack", "teams", "teams_card", "pagerduty"])
def test_render_matches_golden(kind: str) -> None:
    notifier = notifiers()[kind]
    alert = nasty_alert()
    payload = notifier.render(alert)
    check_golden(kind, payload)
    # Pure: same input, same output; the output is a new object each time.
    again = notifier.render(alert)
    assert again == payload
    assert again is not payload
    # UTF-8 JSON, round-trips exactly.
    body = encode_json(payload)
    assert json.loads(body.decode("utf-8")) == payload
    assert "🐍".encode() in body


@pytest.mark.parametrize("kind", ["webhook", "slack", "teams"])
def test_render_digest_matches_golden(kind: str) -> None:
    notifier = notifiers()[kind]
    alerts = [
        nasty_alert(pid=1000 + i, remote_port=4444 + i, rule="reverse-shell" if i % 3 else "irc")
        for i in range(23)
    ]
    payload = notifier.render_digest(alerts)
    assert payload is not None
    check_golden(f"{kind}_digest", payload)
    json.loads(encode_json(payload))


def test_pagerduty_has_no_digest_and_keeps_the_routing_key_out_of_render() -> None:
    pd = notifiers()["pagerduty"]
    assert pd.render_digest([nasty_alert(), nasty_alert(pid=2)]) is None
    assert not PagerDutyNotifier.supports_digest()
    assert "R0UTINGKEY" not in json.dumps(pd.render(nasty_alert()))


def test_render_does_not_touch_the_alert() -> None:
    alert = nasty_alert()
    before = copy.deepcopy(alert.as_dict())
    for notifier in notifiers().values():
        payload = notifier.render(alert)
        json.dumps(payload)
        notifier.render_digest([alert, alert])
    assert alert.as_dict() == before


def test_slack_escapes_every_untrusted_value() -> None:
    slack = notifiers()["slack"]
    payload = slack.render(nasty_alert(username="<@admin>", host="web<&>01"))
    texts = [payload["text"]]
    for block in payload["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(f["text"] for f in block.get("fields", ()))
        texts.extend(e["text"] for e in block.get("elements", ()))
    joined = "\n".join(texts)
    # No raw control characters of Slack markup survive from the event.
    assert "<!channel>" not in joined
    assert "<@U123>" not in joined
    assert "<@admin>" not in joined
    assert "&lt;!channel&gt;" in joined
    assert "nc&lt;b&gt;&amp;ü" in joined
    assert "web&lt;&amp;&gt;01" in joined
    # Every '<' left is one Slack never sees: none at all.
    assert "<" not in joined.replace("&lt;", "")
    # A ``` inside the command line cannot close the code block.
    (cmd_block,) = [t for t in texts if t.startswith("*Command line*")]
    assert cmd_block.count("```") == 2


def test_pagerduty_limits() -> None:
    pd = notifiers()["pagerduty"]
    long_rule = "r" * 100
    payload = pd.render(make_alert(rule=long_rule, cmdline="x" * 5000, name="y" * 3000))
    assert len(payload["dedup_key"]) <= 255
    assert len(payload["payload"]["summary"]) <= 1024
    assert payload["payload"]["summary"].endswith(" chars]")
    assert payload["event_action"] == "trigger"
    assert payload["payload"]["severity"] == "error"


def test_teams_envelope_is_configurable() -> None:
    message = notifiers()["teams"].render(nasty_alert())
    card = notifiers()["teams_card"].render(nasty_alert())
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"] == card
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"


def test_unknown_process_is_rendered_explicitly() -> None:
    alert = make_alert(name="<drop>", path="<drop>", cmdline="<drop>", pid="<drop>")
    for kind, notifier in notifiers().items():
        payload = notifier.render(alert)
        if kind == "webhook":  # the raw row: the missing columns are simply absent
            assert "name" not in payload["connection"]
            continue
        expected = "&lt;unknown&gt;" if kind == "slack" else "<unknown>"
        assert expected in json.dumps(payload, ensure_ascii=False), kind


def test_helpers() -> None:
    assert literal("a<b>&c", "slack") == "a&lt;b&gt;&amp;c"
    assert fit("abcdef" * 10, 20, "plain") == "abcde…[cut 55 chars]"
    assert fit("abc", 4, "plain") == "abc"


def test_every_registered_http_notifier_has_a_golden_file() -> None:
    covered = {"webhook", "slack", "teams", "pagerduty"}
    ours = {t for t in DEFAULT_REGISTRY.types() if t in covered}
    assert ours == covered
    for kind in covered:
        assert (GOLDEN / f"{kind}.json").exists()
