"""Alert service: follow osquery result logs, match connections, send notifications.

The pipeline, one package per stage (see docs/alert-service.md)::

    source/  results log → complete lines         (FileFollower, read_whole_file)
    parse/   line → typed Event(s)                 (parse_line)
    match/   Event → Alert per matching rule       (RuleSet)
    notify/  Alert → notifier (webhook, ...)       (Notifier registry)

:mod:`alert_service.config` loads and validates the YAML config,
:mod:`alert_service.pipeline` wires the stages, :mod:`alert_service.cli` is the
``tracked-connections-alerts`` command.
"""

from __future__ import annotations

from alert_service.errors import (
    AlertServiceError,
    ConfigError,
    MatchError,
    NotifyError,
    ParseError,
    SourceError,
)

__all__ = [
    "AlertServiceError",
    "ConfigError",
    "MatchError",
    "NotifyError",
    "ParseError",
    "SourceError",
    "__version__",
]

__version__ = "0.1.0"
