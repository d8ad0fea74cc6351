"""Microsoft Teams notifier for Workflows ("When a Teams webhook request is received").

Office 365 connectors (MessageCard) are retired; Workflows accept Adaptive Cards only
(alerting-delivery-and-tailing.md §2.3). The default body is the message envelope::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {<AdaptiveCard>}}]}

``envelope: card`` sends the bare card instead, for flows built to expect it. The card
(version ``card_version``, default 1.4) has a title, a summary line, a FactSet and the
command line in monospace. Values are JSON-encoded, never templated into JSON text.
Workflows answer 202 Accepted; any 2xx is success.

Config::

    - name: teams-soc
      type: teams
      url: {env: TEAMS_WORKFLOW_URL}    # the URL holds a signature: env or file only
      envelope: message                 # message (default) | card
      card_version: "1.4"               # 1.2 .. 1.5
      timeout_secs: 10
      connect_timeout_secs: 5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self, cast

from alert_service.match.alert import Alert
from alert_service.notify.format import facts, summary_line, truncate
from alert_service.notify.http import HttpNotifier, HttpSettings, encode_json
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret

__all__ = ["ADAPTIVE_CARD_CONTENT_TYPE", "TeamsNotifier", "TeamsSettings"]

ADAPTIVE_CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
_CARD_SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
_VALUE_CHARS: Final = 300
_CMDLINE_CHARS: Final = 1500
_DIGEST_LINES: Final = 20

Envelope = Literal["message", "card"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamsSettings(HttpSettings):
    """Options of a Teams notifier (plus the timeouts of :class:`HttpSettings`).

    Attributes:
        url: the Workflows trigger URL (a secret).
        envelope: ``message`` wraps the card in a message attachment; ``card`` sends it bare.
        card_version: Adaptive Card schema version.
    """

    url: Secret
    envelope: Envelope = "message"
    card_version: str = "1.4"


def _text_block(text: str, **extra: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **extra}


@register_notifier("teams")
class TeamsNotifier(HttpNotifier[TeamsSettings]):
    """Post alerts as Adaptive Cards to a Teams Workflows webhook.

    Constructed as :class:`~alert_service.notify.http.HttpNotifier` (``name``, a
    :class:`TeamsSettings`, an optional transport).
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 60.0
    default_rate_limit_burst: ClassVar[int] = 1
    default_digest_threshold: ClassVar[int] = 10
    config_schema: ClassVar[Mapping[str, Any]] = HttpNotifier.options_schema(
        {
            "url": {"$ref": "#/$defs/secret_ref"},
            "envelope": {"enum": ["message", "card"]},
            "card_version": {"enum": ["1.2", "1.3", "1.4", "1.5"]},
        },
        required=["url"],
    )

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(
            name,
            TeamsSettings(
                url=options["url"],
                envelope=cast(Envelope, options.get("envelope", "message")),
                card_version=str(options.get("card_version", "1.4")),
                **TeamsSettings.timeouts(options),
            ),
        )

    def _wrap(self, body: list[dict[str, Any]]) -> dict[str, Any]:
        card = {
            "$schema": _CARD_SCHEMA,
            "type": "AdaptiveCard",
            "version": self.settings.card_version,
            "body": body,
            "msteams": {"width": "Full"},
        }
        if self.settings.envelope == "card":
            return card
        return {
            "type": "message",
            "attachments": [
                {"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}
            ],
        }

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the envelope (or bare card) for one alert."""
        f = facts(alert)
        fact_rows = [
            ("Host", f.host + (f" ({f.hostname})" if f.hostname and f.hostname != f.host else "")),
            ("Process", f"{f.process} (pid {f.pid})"),
            ("User", f.user),
            ("Remote", f"{f.remote}/{f.protocol}"),
            ("Local", f.local),
            ("Direction", f.direction),
            ("Path", f.path or "<unknown>"),
            ("Time", f.time),
            ("Alert id", f.alert_id),
        ]
        body: list[dict[str, Any]] = [
            _text_block(
                f"{truncate(f.rule, _VALUE_CHARS)}: connection {f.verb} on "
                f"{truncate(f.host, _VALUE_CHARS)}",
                size="Medium",
                weight="Bolder",
                color="Attention",
            ),
            _text_block(truncate(summary_line(f), _CMDLINE_CHARS), isSubtle=True),
            {
                "type": "FactSet",
                "facts": [
                    {"title": title, "value": truncate(value, _VALUE_CHARS)}
                    for title, value in fact_rows
                ],
            },
        ]
        if f.cmdline:
            body.append(_text_block(truncate(f.cmdline, _CMDLINE_CHARS), fontType="Monospace"))
        return self._wrap(body)

    def render_digest(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        """Return one card listing up to 20 alerts, counts per rule and the rest's number."""
        all_facts = [facts(a) for a in alerts]
        per_rule = Counter(f.rule for f in all_facts)
        shown = all_facts[:_DIGEST_LINES]
        rules = ", ".join(f"{rule}: {n}" for rule, n in sorted(per_rule.items()))
        body: list[dict[str, Any]] = [
            _text_block(
                f"{len(all_facts)} alerts folded into one digest",
                size="Medium",
                weight="Bolder",
                color="Attention",
            ),
            _text_block(truncate(rules, _CMDLINE_CHARS), isSubtle=True),
            {
                "type": "FactSet",
                "facts": [
                    {"title": f.time, "value": truncate(summary_line(f), _VALUE_CHARS)}
                    for f in shown
                ],
            },
        ]
        more = len(all_facts) - len(shown)
        if more:
            body.append(_text_block(f"… and {more} more", isSubtle=True))
        return self._wrap(body)

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` once; raises ``NotifyError`` (see :mod:`alert_service.notify.http`)."""
        del idempotency_key  # Workflows have no idempotency header
        self.post(self.settings.url.reveal(), encode_json(payload))
