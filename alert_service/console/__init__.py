"""The web console on the ops port: :mod:`~alert_service.console.app` (pages and
actions), :mod:`~alert_service.console.security` (login, CSRF) and
:mod:`~alert_service.console.config` (the ``console`` section)."""

from __future__ import annotations

from alert_service.console.config import ConsoleConfig

__all__ = ["ConsoleConfig"]
