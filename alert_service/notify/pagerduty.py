"""PagerDuty Events API v2 notifier (``trigger`` events).

Body (alerting-delivery-and-tailing.md §2.5, PagerDuty developer-docs
``docs/events-API-v2/02-Trigger-Events.md``)::

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
from alert_service.notify.base import Notifier
from alert_service.notify.format import facts, iso_time, summary_line, truncate
from alert_service.notify.http import HttpTransport, encode_json
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret

__all__ = ["DEFAULT_EVENTS_URL", "PagerDutyNotifier", "PagerDutySettings"]

DEFAULT_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
_MAX_DEDUP_KEY: Final = 255
_MAX_SUMMARY: Final = 1024
_MAX_SOURCE: Final = 255

Severity = Literal["critical", "error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class PagerDutySettings:
    """Options of a PagerDuty notifier.

    Attributes:
        routing_key: the integration's routing key (a secret).
        severity: ``payload.severity`` of every event.
        url: the Events API v2 enqueue URL.
        timeout_secs: read timeout, seconds.
        connect_timeout_secs: connect timeout, seconds.
    """

    routing_key: Secret
    severity: Severity = "warning"
    url: str = DEFAULT_EVENTS_URL
    timeout_secs: float = 10.0
    connect_timeout_secs: float = 5.0


@register_notifier("pagerduty")
class PagerDutyNotifier(Notifier):
    """Send each alert as a PagerDuty Events v2 ``trigger``.

    Args:
        name: configured notifier name.
        settings: validated options.
        transport: HTTP transport (a new one when None).
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 120.0
    default_rate_limit_burst: ClassVar[int] = 2
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "routing_key": {"$ref": "#/$defs/secret_ref"},
            "severity": {"enum": ["critical", "error", "warning", "info"]},
            "url": {"type": "string", "pattern": "^https?://[^\\s]+$"},
            "timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
            "connect_timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
        },
        "required": ["routing_key"],
    }

    def __init__(
        self, name: str, settings: PagerDutySettings, transport: HttpTransport | None = None
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.transport = transport if transport is not None else HttpTransport(name)

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(
            name,
            PagerDutySettings(
                routing_key=options["routing_key"],
                severity=cast(Severity, options.get("severity", "warning")),
                url=str(options.get("url", DEFAULT_EVENTS_URL)),
                timeout_secs=float(options.get("timeout_secs", 10.0)),
                connect_timeout_secs=float(options.get("connect_timeout_secs", 5.0)),
            ),
        )

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the trigger event without ``routing_key`` (added by :meth:`send`)."""
        f = facts(alert)
        payload = alert.as_dict()
        return {
            "event_action": "trigger",
            "dedup_key": truncate(f"tracked-connections/{alert.rule}/{alert.id}", _MAX_DEDUP_KEY),
            "client": "tracked-connections",
            "payload": {
                "summary": truncate(summary_line(f), _MAX_SUMMARY),
                "source": truncate(f.host, _MAX_SOURCE),
                "severity": self.settings.severity,
                "timestamp": iso_time(alert.event.unix_time),
                "component": f.process,
                "group": alert.rule,
                "class": "network-connection",
                "custom_details": {
                    "alert_id": alert.id,
                    "rule": alert.rule,
                    "action": payload["action"],
                    "query": payload["query"],
                    "connection": payload["connection"],
                    "decorations": payload["decorations"],
                },
            },
        }

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` with the routing key added; raises ``NotifyError``."""
        del idempotency_key  # dedup_key in the body plays that part
        body = encode_json({"routing_key": self.settings.routing_key.reveal(), **payload})
        self.transport.post(
            self.settings.url,
            body,
            headers={},
            connect_timeout_secs=self.settings.connect_timeout_secs,
            read_timeout_secs=self.settings.timeout_secs,
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self.transport.close()
