"""Slack incoming-webhook notifier: ``text`` plus Block Kit ``blocks``.

Payload (Slack API docs, "Sending messages using incoming webhooks" and the Block Kit
reference): ``text`` is the notification fallback, ``blocks`` a header section, a
fields section, the command line and a context line. Every value taken from the event
(process name, command line, user, host, decorations) passes through
:func:`~alert_service.notify.literal.literal` (``slack`` markup; ``slack_code`` in the
command-line block) and every ``mrkdwn`` object sets ``"verbatim": true``, so no value
can form a link, a mention (``<!channel>``, ``<@U…>``) or formatting.

Slack's documented limits hold for any input: a section's text is at most 3000
characters, a field at most 2000, a section has at most 10 fields, a context block at
most 10 elements, a message at most 50 blocks. Values are cut *after* escaping (an
``&`` becomes five characters), each cut ending in ``…[cut N chars]``; the digest
lists as many alerts as fit and counts the rest.

Success is HTTP 200 with the body ``ok``; any other 200 body is an error that is
not retried (Alertmanager's practice, notify/slack/slack.go). Slack allows about
one message per second per webhook, hence the default rate limit of 60/min and a
digest when more than 10 alerts wait.

Config::

    - name: slack-soc
      type: slack
      url: {env: SLACK_WEBHOOK_URL}   # the URL holds a token: env or file only
      timeout_secs: 10
      connect_timeout_secs: 5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from alert_service.errors import NotifyError
from alert_service.match.alert import Alert
from alert_service.notify.format import facts, summary_line
from alert_service.notify.http import HttpNotifier, HttpSettings, encode_json
from alert_service.notify.literal import fit, units
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret

__all__ = ["SlackNotifier", "SlackSettings"]

SECTION_TEXT_MAX: Final = 3000
"""Most characters of a section's ``text`` (Slack Block Kit reference, "Section block")."""
FIELD_TEXT_MAX: Final = 2000
"""Most characters of one of a section's ``fields`` (same page)."""
FIELDS_MAX: Final = 10
"""Most ``fields`` of one section (same page)."""
CONTEXT_ELEMENTS_MAX: Final = 10
"""Most ``elements`` of a context block (Block Kit reference, "Context block")."""
BLOCKS_MAX: Final = 50
"""Most blocks of one message (Block Kit reference, "Blocks")."""
_FIELD_CHARS: Final = 300
_CMDLINE_CHARS: Final = SECTION_TEXT_MAX - 100
_DIGEST_LINES: Final = 20
_DIGEST_LINE_CHARS: Final = 280


def _esc(text: str, limit: int = _FIELD_CHARS) -> str:
    """``text`` shown literally in ``mrkdwn``, cut to ``limit`` characters after escaping."""
    return fit(text, limit, "slack")


def _code(text: str) -> str:
    """A ``` block holding ``text`` literally (see :func:`literal`, ``slack_code``)."""
    return "```" + fit(text, _CMDLINE_CHARS, "slack_code") + "```"


def _mrkdwn(text: str) -> dict[str, Any]:
    """A ``mrkdwn`` text object with Slack's automatic linking turned off."""
    return {"type": "mrkdwn", "text": text, "verbatim": True}


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackSettings(HttpSettings):
    """Options of a Slack notifier (plus the timeouts of :class:`HttpSettings`).

    Attributes:
        url: the incoming-webhook URL (a secret).
    """

    url: Secret


@register_notifier("slack")
class SlackNotifier(HttpNotifier[SlackSettings]):
    """Post alerts to a Slack incoming webhook.

    Constructed as :class:`~alert_service.notify.http.HttpNotifier` (``name``, a
    :class:`SlackSettings`, an optional transport).
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 60.0
    default_rate_limit_burst: ClassVar[int] = 1
    default_digest_threshold: ClassVar[int] = 10
    config_schema: ClassVar[Mapping[str, Any]] = HttpNotifier.options_schema(
        {"url": {"$ref": "#/$defs/secret_ref"}}, required=["url"]
    )

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(name, SlackSettings(url=options["url"], **SlackSettings.timeouts(options)))

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return ``{"text": ..., "blocks": [...]}`` for one alert (values escaped)."""
        f = facts(alert)
        fields = [
            ("Host", f.host + (f" ({f.hostname})" if f.hostname and f.hostname != f.host else "")),
            ("Process", f"{f.process} (pid {f.pid})"),
            ("User", f.user),
            ("Remote", f"{f.remote}/{f.protocol}"),
            ("Local", f.local),
            ("Direction", f.direction),
            ("Path", f.path or "<unknown>"),
            ("Time", f.time),
        ]
        blocks: list[dict[str, Any]] = [
            {
                "type": "section",
                "text": _mrkdwn(
                    f":rotating_light: *{_esc(f.rule)}*: connection {_esc(f.verb)} on "
                    f"*{_esc(f.host)}*"
                ),
            },
            {
                "type": "section",
                "fields": [_mrkdwn(f"*{label}*\n{_esc(value)}") for label, value in fields],
            },
        ]
        if f.cmdline:
            blocks.append(
                {
                    "type": "section",
                    "text": _mrkdwn("*Command line*\n" + _code(f.cmdline)),
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    _mrkdwn(
                        f"alert {_esc(f.alert_id)} · query {_esc(f.query)}"
                        + (f" · community_id {_esc(f.community_id)}" if f.community_id else "")
                    )
                ],
            }
        )
        return {"text": _esc(summary_line(f), SECTION_TEXT_MAX), "blocks": blocks}

    def render_digest(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        """Return one message listing up to 20 alerts, counts per rule and the rest's number."""
        all_facts = [facts(a) for a in alerts]
        per_rule = Counter(f.rule for f in all_facts)
        lines: list[str] = []
        used = 0
        for f in all_facts[:_DIGEST_LINES]:
            line = "• " + _esc(summary_line(f), _DIGEST_LINE_CHARS)
            if used + units(line) + 1 > SECTION_TEXT_MAX:
                break
            lines.append(line)
            used += units(line) + 1
        more = len(all_facts) - len(lines)
        rules = ", ".join(f"{rule}: {n}" for rule, n in sorted(per_rule.items()))
        title = _esc(
            f"{len(all_facts)} alerts folded into one digest ({rules})", SECTION_TEXT_MAX - 40
        )
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": _mrkdwn(f":rotating_light: *{title}*")},
            {"type": "section", "text": _mrkdwn("\n".join(lines))},
        ]
        if more:
            blocks.append({"type": "context", "elements": [_mrkdwn(f"… and {more} more")]})
        return {"text": title, "blocks": blocks}

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload``; a 200 whose body is not ``ok`` is a non-retryable error.

        Raises:
            NotifyError: see :mod:`alert_service.notify.http`; ``error_type``
                ``"response_body"`` for a 200 without ``ok``.
        """
        del idempotency_key  # Slack has no idempotency header
        reply = self.post(self.settings.url.reveal(), encode_json(payload))
        if reply.status == 200 and reply.text.strip() != "ok":
            detail = "".join(ch if ch.isprintable() else " " for ch in reply.text[:200]).strip()
            raise NotifyError(
                f"{self.name}: HTTP 200 without 'ok': {detail or '(empty body)'}",
                retryable=False,
                error_type="response_body",
            )
