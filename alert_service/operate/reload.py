"""``SIGHUP``: read the configuration (and so the IOC lists) again and apply it.

:func:`config_for_reload` decides: an invalid file, a changed ``state_dir`` or a
start-up check that fails keeps the running configuration and logs every problem as
``config_reload_failed``; otherwise the new configuration is returned and ``run``
swaps its pipeline and delivery workers (queued alerts are rows in the outbox, so
none is lost: workers finish the request in flight, the new ones take the rest).
Changes to ``metrics`` (and ``console``) are logged as ``config_reload_partial``:
the listener keeps its address until a restart.
"""

from __future__ import annotations

import logging

from alert_service.config import Config, load_config
from alert_service.errors import ConfigError
from alert_service.logs import log_event
from alert_service.operate.preflight import preflight_problems

__all__ = ["config_for_reload"]

_log = logging.getLogger("alert_service.reload")


def config_for_reload(path: str, current: Config) -> Config | None:
    """The configuration to switch to, or None to keep ``current`` (problems logged)."""
    try:
        new = load_config(path)
    except ConfigError as err:
        problems = [str(p) for p in err.problems]
    else:
        problems = []
        if new.state_dir != current.state_dir:
            problems.append(
                f"{path}: $.state_dir: changing it needs a restart"
                f" (the service runs with {current.state_dir})"
            )
        problems += preflight_problems(new, check_port=False)
    if problems:
        log_event(
            _log,
            logging.ERROR,
            "config_reload_failed",
            config=path,
            problems=problems,
            reason="the running configuration is kept",
        )
        return None
    restart = [
        name
        for name in ("metrics", "console")
        if getattr(new, name, None) != getattr(current, name, None)
    ]
    if restart:
        log_event(
            _log,
            logging.WARNING,
            "config_reload_partial",
            config=path,
            needs_restart=restart,
            reason="the listener keeps its running settings until a restart",
        )
    return new
