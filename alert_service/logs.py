"""Structured logging: one JSON object per line on stderr.

Each record is ``{"ts": <RFC 3339 UTC>, "level": "info", "logger": ..., "event": ...,
<fields>}``. ``event`` is a short snake_case name (``source_rotated``,
``notify_failed``); the fields come from :func:`log_event`. Secrets never reach this
module: callers log notifier *names*, never URLs or header values.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "configure_logging", "log_event"]

_FIELDS_ATTR = "alert_fields"


class JsonFormatter(logging.Formatter):
    """Format a :class:`logging.LogRecord` as one compact JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record``; extra fields come from ``record.alert_fields``."""
        created = time.gmtime(record.created)
        millis = int(record.msecs)
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, _FIELDS_ATTR, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(key, value)
        if record.exc_info and record.levelno >= logging.ERROR:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str, separators=(",", ":"))


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    """Send the ``alert_service`` loggers to ``stream`` (default stderr) as JSON lines.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: where to write; default ``sys.stderr``.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("alert_service")
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` at ``level`` with ``fields`` as extra JSON members.

    Args:
        logger: a logger under ``alert_service``.
        level: a :mod:`logging` level such as ``logging.INFO``.
        event: short snake_case event name.
        **fields: JSON-serialisable values (others are logged with ``str()``).
    """
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS_ATTR: fields})
