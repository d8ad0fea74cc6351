"""Untrusted values are shown literally on every destination (one escape function).

Golden payloads (tests/alert_service/golden/hostile_*.json, reviewed by hand) pin what
each of the four notifiers sends for an alert whose every text field holds a disguised
link, mentions, Markdown and mrkdwn markup, a bidirectional override and a newline.
Regenerate with ``UPDATE_GOLDEN=1`` after an intended change and review the diff.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deliver_support import make_alert

from alert_service.match import Alert
from alert_service.notify import (
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
)
from alert_service.notify.literal import fit, literal, visible
from alert_service.secret import Secret

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
LINK = "[Verify your account](https://evil.example/login)"
MENTIONS = "<!channel> <!here> <@U123> @everyone <https://evil.example|click>"
MARKUP = "*bold* _it_ ~strike~ `code` **b** # head\n- item > quote &amp;"
BIDI = "report\u202eexe.txt"
# A DNS name as the extension logs it (dnspython's escapes): '<', '*', '_' and '@'
# are legal octets of a label; a '.' inside a label is written '\.'.
NAME = "<!channel>.*bold*._it_.@everyone\\.x\\032y.evil.example"


def hostile_alert() -> Alert:
    return make_alert(
        rule="hostile",
        host=f"web-01 {LINK}",
        name=f"nc {MARKUP}",
        path=f"/tmp/{BIDI}",
        cmdline=f"sh -c 'curl {LINK}' {MENTIONS} {MARKUP}",
        username=f"{MENTIONS}",
        decorations={"hostname": f"{LINK}.example.com"},
        remote_hostname=NAME,
        remote_hostname_source="process",
    )


def notifiers() -> dict[str, Notifier]:
    return {
        "webhook": WebhookNotifier.from_config("hook", {"url": "http://127.0.0.1:9/x"}),
        "slack": SlackNotifier.from_config("slack", {"url": Secret("http://127.0.0.1:9", "e:S")}),
        "teams": TeamsNotifier.from_config("teams", {"url": Secret("http://127.0.0.1:9", "e:T")}),
        "pagerduty": PagerDutyNotifier.from_config(
            "pd", {"routing_key": Secret("R0UTINGKEY", "env:PD")}
        ),
    }


def _golden(name: str, payload: Any) -> None:
    path = GOLDEN / f"hostile_{name}.json"
    text = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), name


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("kind", ["webhook", "slack", "teams", "pagerduty"])
def test_hostile_alert_matches_golden(kind: str) -> None:
    notifier = notifiers()[kind]
    _golden(kind, notifier.render(hostile_alert()))
    digest = notifier.render_digest([hostile_alert(), hostile_alert()])
    if digest is not None:
        _golden(f"{kind}_digest", digest)


@pytest.mark.parametrize("digest", [False, True])
def test_slack_shows_links_mentions_and_markup_literally(digest: bool) -> None:
    slack = notifiers()["slack"]
    payload = (
        slack.render_digest([hostile_alert(), hostile_alert()])
        if digest
        else slack.render(hostile_alert())
    )
    # Slack never fetches or previews a URL found in a value.
    assert (payload["unfurl_links"], payload["unfurl_media"]) == (False, False)
    objects = [n for n in _walk(payload) if n.get("type") == "mrkdwn"]
    assert objects
    # Automatic linking of URLs and channel names is off on every text object.
    assert all(o.get("verbatim") is True for o in objects)
    texts = [payload["text"], *(o["text"] for o in objects)]
    for text in texts:
        # No '<' reaches Slack from a value: no <!channel>, <@U…> or <url|text>.
        assert "<" not in text and ">" not in text
        # No value's formatting marker can open emphasis: each follows a zero-width space.
        # (Inside a ``` block Slack formats nothing: only text outside one counts.)
        outside = "".join(text.split("```")[::2])
        for raw in ("*bold*", "_it_", "~strike~", "`code`"):
            assert raw not in outside
        # Invisible characters are visible text.
        assert "\u202e" not in text
    joined = "\n".join(texts)
    assert "&lt;!channel&gt;" in joined
    assert "\u200b*bold\u200b* \u200b_it\u200b_" in joined
    assert digest or "\\u202E" in joined


@pytest.mark.parametrize("envelope", ["message", "card"])
def test_teams_uses_only_elements_that_render_no_markdown(envelope: str) -> None:
    teams = TeamsNotifier.from_config(
        "teams", {"url": Secret("http://127.0.0.1:9", "e:T"), "envelope": envelope}
    )
    for payload in (teams.render(hostile_alert()), teams.render_digest([hostile_alert()] * 2)):
        kinds = {n.get("type") for n in _walk(payload)}
        # TextBlock and FactSet read their text as Markdown; TextRun does not.
        assert not kinds & {"TextBlock", "FactSet"}
        runs = [n["text"] for n in _walk(payload) if n.get("type") == "TextRun"]
        assert any(LINK in run for run in runs)  # shown, as text
        assert all("\n" not in run and "\u202e" not in run for run in runs)


def test_pagerduty_texts_are_plain_and_details_exact() -> None:
    payload = notifiers()["pagerduty"].render(hostile_alert())
    body = payload["payload"]
    for key in ("summary", "source", "component", "group"):
        assert "\n" not in body[key] and "\u202e" not in body[key], key
    assert body["custom_details"]["connection"]["path"] == f"/tmp/{BIDI}"


def test_webhook_sends_the_exact_values() -> None:
    alert = hostile_alert()
    assert notifiers()["webhook"].render(alert) == alert.as_dict()


def test_literal_per_markup() -> None:
    value = "a<b>&c *d* \n\u202e[x](https://e.x)"
    assert literal(value, "json") == value
    assert literal(value, "plain") == "a<b>&c *d* \\x0A\\u202E[x](https://e.x)"
    assert literal(value, "teams") == literal(value, "plain")
    assert literal(value, "slack") == (
        "a&lt;b&gt;&amp;c \u200b*d\u200b* \\x0A\\u202E[x](https://e.x)"
    )
    assert literal("a```b<", "slack_code") == "a`\u200b``b&lt;"
    # The cut falls before an escape, never inside one, and says how much is missing.
    assert fit("&" * 10, 20, "slack") == "&amp;…[cut 9 chars]"
    assert fit("\U0001f40d" * 10, 19, "plain") == "\U0001f40d\U0001f40d…[cut 8 chars]"


def test_the_remote_name_is_shown_beside_the_address_and_escaped_everywhere() -> None:
    alert = hostile_alert()
    rendered = {kind: n.render(alert) for kind, n in notifiers().items()}
    # The JSON destinations get the exact name, in the row and as its own field.
    assert rendered["webhook"]["connection"]["remote_hostname"] == NAME
    details = rendered["pagerduty"]["payload"]["custom_details"]
    assert details["remote_hostname"] == NAME
    assert details["remote_hostname_source"] == "process"
    # The texts show it beside the address, escaped for their markup.
    summary = rendered["pagerduty"]["payload"]["summary"]
    assert summary.endswith(f"198.51.100.7:4444 ({NAME})")  # plain: printable as is
    slack = rendered["slack"]
    (remote,) = [
        f["text"] for b in slack["blocks"] for f in b.get("fields", ()) if "*Remote*" in f["text"]
    ]
    assert remote == "*Remote*\n198.51.100.7:4444/tcp (" + literal(NAME, "slack") + ")"
    assert "&lt;!channel&gt;" in remote and "<!channel>" not in slack["text"]
    assert "\u200b*bold\u200b*" in remote
    runs = [n["text"] for n in _walk(rendered["teams"]) if n.get("type") == "TextRun"]
    assert f"198.51.100.7:4444/tcp ({NAME})" in runs


def test_visible_covers_every_control_format_and_separator_character() -> None:
    """The escape's fixed set holds every Cc, Cf, Zl and Zp character of this Python's
    Unicode database, and nothing visible (only those or unassigned code points)."""
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        hidden = category in ("Cc", "Cf", "Zl", "Zp")
        shown = visible(char)
        if hidden:
            assert shown != char and shown.startswith("\\"), f"U+{code:04X} {category}"
        else:
            assert shown == char or category == "Cn", f"U+{code:04X} {category}"


def test_visible_keeps_newlines_only_when_asked() -> None:
    text = "a\nb\r\x1b\U000e0041\u2066"
    assert visible(text) == "a\\x0Ab\\x0D\\x1B\\U000E0041\\u2066"
    assert visible(text, keep_newlines=True) == "a\nb\\x0D\\x1B\\U000E0041\\u2066"
