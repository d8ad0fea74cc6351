"""``replay --render``: print what each notifier would send, send nothing.

Each alert becomes one JSON line per notifier of its rule::

    {"notifier": "slack-soc", "type": "slack", "alert_id": "...", "rule": "...",
     "payload": <Notifier.render(alert)>}

Rendering is pure and never includes secrets (PagerDuty's ``routing_key`` and
webhook headers are added by ``send``), so the output is safe to share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

from alert_service.errors import NotifyError
from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier
from alert_service.notify.http import encode_json

__all__ = ["RenderDispatcher"]


class RenderDispatcher:
    """A ``replay`` dispatcher writing every notifier's rendered payload.

    Args:
        notifiers: notifier name → notifier (every name the rules use).
        stream: binary stream receiving UTF-8 JSON lines.
    """

    def __init__(self, notifiers: Mapping[str, Notifier], stream: BinaryIO) -> None:
        self.notifiers = dict(notifiers)
        self.stream = stream

    def dispatch(self, alert: Alert) -> None:
        """Write one line per notifier of ``alert``; a render error is written as ``error``."""
        for name in alert.notify:
            notifier = self.notifiers[name]
            doc: dict[str, object] = {
                "notifier": name,
                "type": notifier.type,
                "alert_id": alert.id,
                "rule": alert.rule,
            }
            try:
                doc["payload"] = notifier.render(alert)
            except NotifyError as err:
                doc["error"] = str(err)
            self.stream.write(encode_json(doc) + b"\n")
        self.stream.flush()

    def close(self) -> None:
        """Close the notifiers (nothing was sent) and flush the stream."""
        for notifier in self.notifiers.values():
            notifier.close()
        self.stream.flush()
