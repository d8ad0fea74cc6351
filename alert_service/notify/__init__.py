"""Notify stage: render alerts and deliver them to configured destinations.

Public API:

* :class:`Notifier` — base class (``config_schema``, ``from_config``, pure ``render``,
  ``send`` raising :class:`~alert_service.errors.NotifyError`);
* :func:`register_notifier`, :class:`NotifierRegistry`, :data:`DEFAULT_REGISTRY` — the
  ``type`` → class registry;
* :class:`WebhookNotifier` — generic JSON webhook signed per Standard Webhooks
  (``type: webhook``); :class:`SlackNotifier` (``slack``), :class:`TeamsNotifier`
  (``teams``, Workflows + Adaptive Card), :class:`PagerDutyNotifier` (``pagerduty``,
  Events v2);
* :class:`HttpTransport` — shared HTTP POST with status mapping;
  :class:`HttpNotifier` and :class:`HttpSettings` — the base of the notifiers that
  POST (transport, ``timeout_secs``/``connect_timeout_secs`` options);
* :func:`transport_error` — how a :mod:`requests` failure becomes a ``NotifyError``.

Built-in notifiers are imported here by name so that they register themselves.
"""

from __future__ import annotations

from alert_service.notify.base import Notifier
from alert_service.notify.command import CommandNotifier
from alert_service.notify.fleet import FleetLiveQueryNotifier, FleetScriptNotifier
from alert_service.notify.http import (
    HttpNotifier,
    HttpReply,
    HttpSettings,
    HttpTransport,
    encode_json,
    parse_retry_after,
    transport_error,
)
from alert_service.notify.pagerduty import PagerDutyNotifier
from alert_service.notify.registry import DEFAULT_REGISTRY, NotifierRegistry, register_notifier
from alert_service.notify.slack import SlackNotifier
from alert_service.notify.teams import TeamsNotifier
from alert_service.notify.webhook import WebhookNotifier, WebhookSettings

__all__ = [
    "DEFAULT_REGISTRY",
    "CommandNotifier",
    "FleetLiveQueryNotifier",
    "FleetScriptNotifier",
    "HttpNotifier",
    "HttpReply",
    "HttpSettings",
    "HttpTransport",
    "Notifier",
    "NotifierRegistry",
    "PagerDutyNotifier",
    "SlackNotifier",
    "TeamsNotifier",
    "WebhookNotifier",
    "WebhookSettings",
    "encode_json",
    "parse_retry_after",
    "register_notifier",
    "transport_error",
]
