"""The ``console`` section: the web console on the ops port.

::

    console:
      enabled: true                       # default false: no console
      token: {env: CONSOLE_TOKEN}         # or {file: /etc/tracked-connections/console.token}

The console is served by the ops listener (``metrics``: 127.0.0.1:9464 unless set
otherwise) under ``/console/``. Without a token it is only allowed on a loopback
address; a listener on any other address needs one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alert_service.secret import Secret

__all__ = ["ConsoleConfig", "is_loopback"]


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The validated ``console`` section.

    Attributes:
        token: the secret a browser must present once (login form) or a client as
            ``Authorization: Bearer <token>``; None = no login (loopback only).
    """

    token: Secret | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> ConsoleConfig | None:
        """Build from the section with its secret resolved; None when off."""
        if raw is None or not raw.get("enabled", False):
            return None
        token = raw.get("token")
        return cls(token=token if isinstance(token, Secret) else None)


def is_loopback(address: str) -> bool:
    """True for ``127.0.0.0/8``, ``::1`` and ``localhost``."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
