"""Dedup keys: which alerts count as "the same" within ``dedup_window_secs``.

The key of a queued alert for one destination is a hash of::

    (destination, rule, hostIdentifier, action,
     pid, protocol, local_address, remote_address, remote_port)

— the *connection key* is (pid, protocol, local address, remote address, remote
port). The local (ephemeral) port and ``community_id`` (a hash of the 5-tuple that
includes it) are left out on purpose: a process that reconnects to the same peer from
new source ports every few seconds (a beacon) is one alert per window, not one per
connection. Addresses are normalised (IPv4-mapped IPv6 unwrapped), so
``::ffff:198.51.100.7`` and ``198.51.100.7`` are the same peer. A missing value is part
of the key as ``None`` (an unattributed socket is keyed by its addresses).

The key includes the destination, so a delivery to Slack never silences the same
alert's PagerDuty copy; the silence itself is written only after a confirmed delivery
(:func:`alert_service.state.outbox.mark_sent`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from alert_service.match.addresses import parse_address

__all__ = ["CONNECTION_KEY_COLUMNS", "connection_key", "silence_key"]

CONNECTION_KEY_COLUMNS: tuple[str, ...] = (
    "pid",
    "protocol",
    "local_address",
    "remote_address",
    "remote_port",
)
"""Columns of the connection key, in order."""

_ADDRESS_COLUMNS = frozenset({"local_address", "remote_address"})


def _normalise(column: str, value: Any) -> Any:
    if column in _ADDRESS_COLUMNS and isinstance(value, str):
        addr = parse_address(value)
        return str(addr) if addr is not None else value
    return value


def connection_key(payload: Mapping[str, Any]) -> tuple[Any, ...]:
    """Return the connection key of an alert payload (:meth:`Alert.as_dict` shape)."""
    connection = payload.get("connection") or {}
    return tuple(_normalise(c, connection.get(c)) for c in CONNECTION_KEY_COLUMNS)


def silence_key(destination: str, payload: Mapping[str, Any]) -> str:
    """Return the dedup key (32 hex digits) of an alert payload for ``destination``."""
    parts = [
        destination,
        payload.get("rule"),
        payload.get("host"),
        payload.get("action"),
        *connection_key(payload),
    ]
    blob = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]
