"""Operator tooling: what ``status``, ``outbox``, ``silence`` and ``test-notifier``
show and do (:mod:`~alert_service.operate.views`), their command line
(:mod:`~alert_service.operate.commands`), the start-up checks of ``run`` and
``check-config --strict`` (:mod:`~alert_service.operate.preflight`), and times as typed
(:mod:`~alert_service.operate.timespec`). The state reads and writes themselves live in
:mod:`alert_service.state.inspect` and :mod:`alert_service.state.silences`."""

from __future__ import annotations

from alert_service.operate.commands import COMMANDS, add_commands, run_command
from alert_service.operate.preflight import preflight_problems
from alert_service.operate.reload import config_for_reload

__all__ = ["COMMANDS", "add_commands", "config_for_reload", "preflight_problems", "run_command"]
