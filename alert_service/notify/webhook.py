"""Generic JSON webhook notifier: POST the alert payload to a URL.

Body: :meth:`alert_service.match.alert.Alert.as_dict` as compact UTF-8 JSON; headers:
``Content-Type: application/json; charset=utf-8``, ``webhook-id: <alert id>`` (the
Standard Webhooks idempotency header, alerting-delivery-and-tailing.md §2.1) and the
configured ``headers``. Any 2xx is success.

Config (one entry of ``notifiers``)::

    - name: local
      type: webhook
      url: http://127.0.0.1:8765/alerts      # or {env: ALERT_WEBHOOK_URL}
      timeout_secs: 10                       # read timeout, seconds (default 10)
      connect_timeout_secs: 5                # connect timeout, seconds (default 5)
      headers:                               # optional; values may be {env: NAME}
        Authorization: {env: ALERT_WEBHOOK_TOKEN}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier
from alert_service.notify.http import HttpTransport
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret, reveal

__all__ = ["WebhookNotifier", "WebhookSettings"]

_SECRET = {"$ref": "#/$defs/secret_string"}


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Options of a webhook notifier.

    Attributes:
        url: destination, ``http://`` or ``https://``; may be a secret.
        timeout_secs: read timeout, seconds.
        connect_timeout_secs: connect timeout, seconds.
        headers: extra request headers; values may be secrets.
    """

    url: str | Secret
    timeout_secs: float = 10.0
    connect_timeout_secs: float = 5.0
    headers: Mapping[str, str | Secret] = field(default_factory=dict)


@register_notifier("webhook")
class WebhookNotifier(Notifier):
    """POST each alert as JSON to one URL.

    Args:
        name: configured notifier name.
        settings: validated options.
        transport: HTTP transport (a new one when None).
    """

    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {**_SECRET, "pattern": "^https?://[^\\s]+$"},
            "timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
            "connect_timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                "additionalProperties": _SECRET,
            },
        },
        "required": ["url"],
    }

    def __init__(
        self, name: str, settings: WebhookSettings, transport: HttpTransport | None = None
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.transport = transport if transport is not None else HttpTransport(name)

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        settings = WebhookSettings(
            url=options["url"],
            timeout_secs=float(options.get("timeout_secs", 10.0)),
            connect_timeout_secs=float(options.get("connect_timeout_secs", 5.0)),
            headers=dict(options.get("headers", {})),
        )
        return cls(name, settings)

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the generic alert payload (:meth:`Alert.as_dict`)."""
        return alert.as_dict()

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` once; raises ``NotifyError`` (see :mod:`alert_service.notify.http`)."""
        headers = {"webhook-id": idempotency_key}
        headers.update({k: reveal(v) for k, v in self.settings.headers.items()})
        self.transport.post_json(
            reveal(self.settings.url),
            payload,
            headers=headers,
            connect_timeout_secs=self.settings.connect_timeout_secs,
            read_timeout_secs=self.settings.timeout_secs,
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self.transport.close()
