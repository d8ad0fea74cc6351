"""PagerDuty Events API v2 notifier (``trigger`` events).

Body (PagerDuty developer docs, Events API v2, "Send an Alert Event")::

    {"routing_key": <secret>, "event_action": "trigger",
     "dedup_key": "tracked-connections/<rule>/<alert id>",      # <= 255 chars
     "client": "tracked-connections",
     "payload": {"summary": <= 1024 chars, "source": <host>, "severity": <severity>,
                 "timestamp": RFC 3339, "component": <process>, "group": <rule>,
                 "class": "network-connection", "custom_details": {...}}}

:meth:`render` leaves ``routing_key`` out (it is a secret; the golden files and
``replay`` never see it); :meth:`send` adds it. The ``dedup_key`` is stable across
retries and restarts, so a repeated trigger merges into the same PagerDuty alert.
PagerDuty answers 202; 429 is retried (about 120 events/minute per integration key,
hence the default rate limit); 400 (invalid event) is dead-lettered. No digests: each
alert is one PagerDuty event and PagerDuty groups them itself.

Sizes: PagerDuty refuses an event larger than 512 KB (Events API v2 overview, "Event
size limits") and limits ``summary`` to 1024 characters and ``dedup_key`` to 255.
:meth:`render` keeps the body under :data:`EVENT_MAX_BYTES` less room for the routing
key: texts are cut (``…[cut N chars]``), shorter and shorter until the body fits, so
an attacker who pads a process name cannot get the event refused.

``summary``, ``source``, ``component`` and ``group`` are shown by PagerDuty's pages and
apps as text; they pass through :func:`~alert_service.notify.literal.literal`
(``plain``: controls and bidirectional overrides made visible). ``custom_details``
holds the values themselves (JSON, cut only when too long).

Config::

    - name: pagerduty
      type: pagerduty
      routing_key: {env: PAGERDUTY_ROUTING_KEY}   # env or file only
      severity: error                 # critical | error | warning (default) | info
      url: https://events.pagerduty.com/v2/enqueue   # default; override for tests/proxies
      timeout_secs: 10
      connect_timeout_secs: 5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self, cast

from alert_service.match.alert import Alert
from alert_service.notify.format import facts, iso_time, summary_line
from alert_service.notify.http import HttpNotifier, HttpSettings, encode_json
from alert_service.notify.literal import cap_strings, fit, scaled, shrink_to_fit
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret

__all__ = ["DEFAULT_EVENTS_URL", "EVENT_MAX_BYTES", "PagerDutyNotifier", "PagerDutySettings"]

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
_MAX_DEDUP_KEY: Final = 255
_MAX_SUMMARY: Final = 1024
_MAX_SOURCE: Final = 255
EVENT_MAX_BYTES: Final = 512 * 1024
"""PagerDuty's limit on one event's body, bytes."""
_BUDGET_BYTES: Final = EVENT_MAX_BYTES - 4096
"""What :meth:`PagerDutyNotifier.render` may take: the limit less room for the routing key."""
_DETAIL_CHARS: Final = 65_536

Severity = Literal["critical", "error", "warning", "info"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PagerDutySettings(HttpSettings):
    """Options of a PagerDuty notifier (plus the timeouts of :class:`HttpSettings`).

    Attributes:
        routing_key: the integration's routing key (a secret).
        severity: ``payload.severity`` of every event.
        url: the Events API v2 enqueue URL.
    """

    routing_key: Secret
    severity: Severity = "warning"
    url: str = DEFAULT_EVENTS_URL


@register_notifier("pagerduty")
class PagerDutyNotifier(HttpNotifier[PagerDutySettings]):
    """Send each alert as a PagerDuty Events v2 ``trigger``.

    Constructed as :class:`~alert_service.notify.http.HttpNotifier` (``name``, a
    :class:`PagerDutySettings`, an optional transport).
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 120.0
    default_rate_limit_burst: ClassVar[int] = 2
    config_schema: ClassVar[Mapping[str, Any]] = HttpNotifier.options_schema(
        {
            "routing_key": {"$ref": "#/$defs/secret_ref"},
            "severity": {"enum": ["critical", "error", "warning", "info"]},
            "url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
        },
        required=["routing_key"],
    )

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(
            name,
            PagerDutySettings(
                routing_key=options["routing_key"],
                severity=cast(Severity, options.get("severity", "warning")),
                url=str(options.get("url", DEFAULT_EVENTS_URL)),
                **PagerDutySettings.timeouts(options),
            ),
        )

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the trigger event without ``routing_key`` (added by :meth:`send`)."""
        f = facts(alert)
        payload = alert.as_dict()
        details = {
            "alert_id": alert.id,
            "rule": alert.rule,
            "action": payload["action"],
            "query": payload["query"],
            "connection": payload["connection"],
            "decorations": payload["decorations"],
        }

        def build(scale: float) -> dict[str, Any]:
            short = scaled(_MAX_SOURCE, scale)
            return {
                "event_action": "trigger",
                "dedup_key": fit(
                    f"tracked-connections/{alert.rule}/{alert.id}", _MAX_DEDUP_KEY, "json"
                ),
                "client": "tracked-connections",
                "payload": {
                    "summary": fit(summary_line(f), scaled(_MAX_SUMMARY, scale), "plain"),
                    "source": fit(f.host, short, "plain"),
                    "severity": self.settings.severity,
                    "timestamp": iso_time(alert.event.unix_time),
                    "component": fit(f.process, short, "plain"),
                    "group": fit(alert.rule, short, "plain"),
                    "class": "network-connection",
                    "custom_details": cap_strings(details, scaled(_DETAIL_CHARS, scale)),
                },
            }

        return shrink_to_fit(build, _BUDGET_BYTES)

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` with the routing key added; raises ``NotifyError``."""
        del idempotency_key  # dedup_key in the body plays that part
        body = encode_json({"routing_key": self.settings.routing_key.reveal(), **payload})
        self.post(self.settings.url, body)
