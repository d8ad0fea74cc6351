"""Notify stage: render alerts and deliver them to configured destinations.

Public API:

* :class:`Notifier` — base class (``config_schema``, ``from_config``, pure ``render``,
  ``send`` raising :class:`~alert_service.errors.NotifyError`);
* :func:`register_notifier`, :class:`NotifierRegistry`, :data:`DEFAULT_REGISTRY` — the
  ``type`` → class registry;
* :class:`WebhookNotifier` — generic JSON webhook (``type: webhook``);
* :class:`HttpTransport` — shared HTTP POST with status mapping;
* :class:`RetryPolicy`, :func:`deliver` — bounded retries with backoff.

Built-in notifiers are imported here by name so that they register themselves.
"""

from __future__ import annotations

from alert_service.notify.base import Notifier
from alert_service.notify.http import HttpTransport, encode_json, parse_retry_after
from alert_service.notify.registry import DEFAULT_REGISTRY, NotifierRegistry, register_notifier
from alert_service.notify.retry import RetryPolicy, backoff_secs, deliver
from alert_service.notify.webhook import WebhookNotifier, WebhookSettings

__all__ = [
    "DEFAULT_REGISTRY",
    "HttpTransport",
    "Notifier",
    "NotifierRegistry",
    "RetryPolicy",
    "WebhookNotifier",
    "WebhookSettings",
    "backoff_secs",
    "deliver",
    "encode_json",
    "parse_retry_after",
    "register_notifier",
]
