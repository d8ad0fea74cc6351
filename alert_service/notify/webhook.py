"""Generic JSON webhook notifier, signed per Standard Webhooks.

Body: :meth:`alert_service.match.alert.Alert.as_dict` as compact UTF-8 JSON
(``Content-Type: application/json; charset=utf-8``); a digest is
``{"type": "digest", "count": N, "alerts": [<as_dict>, ...]}``. Values are sent as
they are (JSON encoding is their escape; see :mod:`alert_service.notify.literal`), so a
receiver must treat every text as untrusted.

The body is at most ``max_body_bytes`` (default 1 MiB): when the alert is larger, every
text longer than a cap is cut and ends in ``…[cut N chars]``, with caps halved until
the body fits, so a padded command line cannot get the alert refused by a receiver's
size limit.

Headers (Standard Webhooks specification, ``spec/standard-webhooks.md``):

* ``webhook-id``: the stable alert id, the same on every attempt and after a restart
  (the receiver's idempotency key);
* ``webhook-timestamp``: integer Unix seconds of this attempt;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` over
  ``"{webhook-id}.{webhook-timestamp}.{body}"`` with the base64-decoded
  ``signing_secret`` (``whsec_<base64>``) as key — only when a secret is configured;
* the configured ``headers``.

Any 2xx is success.

Config (one entry of ``notifiers``)::

    - name: soc
      type: webhook
      url: https://siem.example.com/hooks/tc  # or {env: NAME} / {file: /path}
      signing_secret: {env: SOC_WEBHOOK_SECRET}   # whsec_...; env or file only
      timeout_secs: 10                       # read timeout, seconds (default 10)
      connect_timeout_secs: 5                # connect timeout, seconds (default 5)
      max_body_bytes: 1048576                # largest body sent, bytes (default 1 MiB)
      headers:                               # optional; values may be secrets
        Authorization: {env: ALERT_WEBHOOK_TOKEN}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from alert_service.match.alert import Alert
from alert_service.notify.http import (
    HTTP_TIMEOUT_PROPERTIES,
    HttpNotifier,
    HttpSettings,
    HttpTransport,
    encode_json,
)
from alert_service.notify.literal import cap_strings, scaled, shrink_to_fit
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret, reveal

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "WebhookNotifier",
    "WebhookSettings",
    "decode_signing_secret",
    "sign",
]

_SECRET = {"$ref": "#/$defs/secret_string"}
_SECRET_REF = {"$ref": "#/$defs/secret_ref"}
_PREFIX = "whsec_"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""Largest body a webhook notifier sends when its entry sets no ``max_body_bytes``."""
_VALUE_CHARS = 65_536


def decode_signing_secret(text: str) -> bytes:
    """Return the HMAC key of a Standard Webhooks secret ``whsec_<base64>``.

    The ``whsec_`` prefix is optional, as in the reference libraries.

    Raises:
        ValueError: not base64, or empty (the message never contains the secret).
    """
    body = text.removeprefix(_PREFIX).strip()
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("signing secret is not whsec_ followed by base64") from err
    if not key:
        raise ValueError("signing secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value ``v1,<base64 HMAC-SHA256>``.

    Args:
        key: the decoded secret (:func:`decode_signing_secret`).
        msg_id: the ``webhook-id``.
        timestamp: the ``webhook-timestamp``, integer Unix seconds.
        body: the exact request body bytes.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings(HttpSettings):
    """Options of a webhook notifier (plus the timeouts of :class:`HttpSettings`).

    Attributes:
        url: destination, ``http://`` or ``https://``; may be a secret.
        headers: extra request headers; values may be secrets.
        signing_secret: Standard Webhooks secret ``whsec_<base64>``, or None to send
            unsigned requests.
        max_body_bytes: largest body sent, bytes; longer texts are cut to fit.
    """

    url: str | Secret
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    signing_secret: Secret | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@register_notifier("webhook")
class WebhookNotifier(HttpNotifier[WebhookSettings]):
    """POST each alert as JSON to one URL, signed when a secret is configured.

    Args:
        name: configured notifier name.
        settings: validated options.
        transport: HTTP transport (a new one when None).
        clock: Unix time in seconds, for ``webhook-timestamp`` (injectable for tests).
    """

    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "url": {**_SECRET, "pattern": "^https?://[^\\s]+$"},
            "signing_secret": _SECRET_REF,
            **HTTP_TIMEOUT_PROPERTIES,
            "max_body_bytes": {"type": "integer", "minimum": 4096, "maximum": 67108864},
            "headers": {
                "type": "object",
                "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                "additionalProperties": _SECRET,
            },
        },
        "required": ["url"],
    }

    def __init__(
        self,
        name: str,
        settings: WebhookSettings,
        transport: HttpTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, settings, transport)
        self._clock = clock
        self._key = (
            decode_signing_secret(settings.signing_secret.reveal())
            if settings.signing_secret is not None
            else None
        )

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys).

        Raises:
            ValueError: the signing secret is not ``whsec_<base64>`` (the config
                loader reports this first, via :meth:`check_options`).
        """
        settings = WebhookSettings(
            url=options["url"],
            headers=dict(options.get("headers", {})),
            signing_secret=options.get("signing_secret"),
            max_body_bytes=int(options.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
            **WebhookSettings.timeouts(options),
        )
        return cls(name, settings)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Also check that ``signing_secret`` decodes (the message omits the value)."""
        problems = super().check_options(options)
        secret = options.get("signing_secret")
        if isinstance(secret, Secret):
            try:
                decode_signing_secret(secret.reveal())
            except ValueError as err:
                problems.append((("signing_secret",), f"{err} ({secret.source})"))
        return problems

    def _bounded(self, payload: dict[str, Any]) -> dict[str, Any]:
        return shrink_to_fit(
            lambda scale: cap_strings(payload, scaled(_VALUE_CHARS, scale)),
            self.settings.max_body_bytes,
        )

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the generic alert payload (:meth:`Alert.as_dict`), texts cut to fit
        ``max_body_bytes``."""
        return self._bounded(alert.as_dict())

    def render_digest(self, alerts: Sequence[Alert]) -> dict[str, Any]:
        """Return ``{"type": "digest", "count": N, "alerts": [<as_dict>, ...]}``, texts
        cut to fit ``max_body_bytes``."""
        return self._bounded(
            {"type": "digest", "count": len(alerts), "alerts": [a.as_dict() for a in alerts]}
        )

    def headers_for(self, body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
        """Return the request headers for ``body`` (Standard Webhooks + configured)."""
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
        if self._key is not None:
            headers["webhook-signature"] = sign(self._key, msg_id, timestamp, body)
        headers.update({k: reveal(v) for k, v in self.settings.headers.items()})
        return headers

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """POST ``payload`` once; raises ``NotifyError`` (see :mod:`alert_service.notify.http`)."""
        body = encode_json(payload)
        self.post(
            reveal(self.settings.url),
            body,
            headers=self.headers_for(body, idempotency_key, int(self._clock())),
        )
