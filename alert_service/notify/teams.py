"""Microsoft Teams notifier for Workflows ("When a Teams webhook request is received").

Office 365 connectors (MessageCard) are retired; Workflows accept Adaptive Cards only
(Microsoft Teams platform docs, "Create incoming webhooks with Workflows"). The default
body is the message envelope::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {<AdaptiveCard>}}]}

``envelope: card`` sends the bare card instead, for flows built to expect it. The card
(version ``card_version``, default 1.4) has a title, a summary line, one line per
fact and the command line in monospace.

Every value is shown literally: the card is built of ``RichTextBlock`` / ``TextRun``
elements (Adaptive Cards 1.2), which render no Markdown — unlike ``TextBlock`` and
``FactSet``, whose text Teams reads as Markdown (links, emphasis, lists) — and every
untrusted value passes through :func:`~alert_service.notify.literal.literal`
(``teams`` markup: controls and bidirectional overrides made visible). Values are
JSON-encoded, never templated into JSON text.

The encoded body stays under Teams's message limit of about 28 KB
(:data:`MESSAGE_MAX_BYTES`): values are cut (``…[cut N chars]``) and, if the card is
still too large, cut shorter until it fits.
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
from alert_service.notify.format import facts, summary_line
from alert_service.notify.http import HttpNotifier, HttpSettings, encode_json
from alert_service.notify.literal import fit, scaled, shrink_to_fit
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret

__all__ = [
    "ADAPTIVE_CARD_CONTENT_TYPE",
    "MESSAGE_MAX_BYTES",
    "TeamsNotifier",
    "TeamsSettings",
]

ADAPTIVE_CARD_CONTENT_TYPE: Final = "application/vnd.microsoft.card.adaptive"
_CARD_SCHEMA: Final = "http://adaptivecards.io/schemas/adaptive-card.json"
MESSAGE_MAX_BYTES: Final = 28_000
"""Teams refuses a message larger than about 28 KB (Microsoft Teams platform docs,
"Create Incoming Webhooks", "Send messages using cURL and PowerShell": "the message size
limit is 28 KB"). 28,000 bytes, the smaller reading of "28 KB"."""
_BUDGET_BYTES: Final = MESSAGE_MAX_BYTES - 1_000
"""What a rendered card may take: the limit less room for what the flow adds."""
_VALUE_CHARS: Final = 1000
_CMDLINE_CHARS: Final = 8000
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


def _run(text: str, max_chars: int, **style: Any) -> dict[str, Any]:
    """A ``TextRun`` showing ``text`` literally (TextRun renders no Markdown), cut to
    ``max_chars``."""
    return {"type": "TextRun", "text": fit(text, max_chars, "teams"), **style}


def _rich(*runs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A ``RichTextBlock`` of ``runs`` (Adaptive Cards 1.2)."""
    return {"type": "RichTextBlock", "inlines": list(runs), **extra}


def _fact(label: str, value: str, max_chars: int) -> dict[str, Any]:
    """One "label: value" line; the label is ours, the value untrusted."""
    return _rich(_run(f"{label}: ", 64, weight="Bolder"), _run(value, max_chars), spacing="None")


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
        """Return the envelope (or bare card) for one alert, at most 27,000 bytes."""
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

        def build(scale: float) -> dict[str, Any]:
            value = scaled(_VALUE_CHARS, scale)
            body: list[dict[str, Any]] = [
                _rich(
                    _run(f.rule, value, size="Medium", weight="Bolder", color="Attention"),
                    _run(f": connection {f.verb} on ", 64, size="Medium", weight="Bolder"),
                    _run(f.host, value, size="Medium", weight="Bolder", color="Attention"),
                ),
                _rich(_run(summary_line(f), scaled(_CMDLINE_CHARS, scale), isSubtle=True)),
                *(_fact(title, text, value) for title, text in fact_rows),
            ]
            if f.cmdline:
                body.append(
                    _rich(_run(f.cmdline, scaled(_CMDLINE_CHARS, scale), fontType="Monospace"))
                )
            return self._wrap(body)

        return shrink_to_fit(build, _BUDGET_BYTES)

    def render_digest(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        """Return one card listing up to 20 alerts, counts per rule and the rest's number."""
        all_facts = [facts(a) for a in alerts]
        per_rule = Counter(f.rule for f in all_facts)
        shown = all_facts[:_DIGEST_LINES]
        rules = ", ".join(f"{rule}: {n}" for rule, n in sorted(per_rule.items()))
        more = len(all_facts) - len(shown)

        def build(scale: float) -> dict[str, Any]:
            value = scaled(_VALUE_CHARS, scale)
            body: list[dict[str, Any]] = [
                _rich(
                    _run(
                        f"{len(all_facts)} alerts folded into one digest",
                        64,
                        size="Medium",
                        weight="Bolder",
                        color="Attention",
                    )
                ),
                _rich(_run(rules, scaled(_CMDLINE_CHARS, scale), isSubtle=True)),
                *(_fact(f.time, summary_line(f), value) for f in shown),
            ]
            if more:
                body.append(_rich(_run(f"… and {more} more", 64, isSubtle=True)))
            return self._wrap(body)

        return shrink_to_fit(build, _BUDGET_BYTES)

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` once; raises ``NotifyError`` (see :mod:`alert_service.notify.http`)."""
        del idempotency_key  # Workflows have no idempotency header
        self.post(self.settings.url.reveal(), encode_json(payload))
