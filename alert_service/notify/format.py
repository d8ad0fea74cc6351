"""Text pieces shared by the chat and paging notifiers' ``render`` (pure functions).

Everything here is derived from an :class:`~alert_service.match.alert.Alert` without
I/O. Untrusted values (process names, command lines, user names, decorations) come
through unchanged; each notifier shows them through
:func:`alert_service.notify.literal.literal` with its own markup, and cuts them with
:func:`alert_service.notify.literal.fit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from alert_service.match.alert import Alert
from alert_service.parse.event import ColumnValue

__all__ = [
    "PROTOCOL_NAMES",
    "AlertFacts",
    "endpoint",
    "facts",
    "iso_time",
    "summary_line",
]

PROTOCOL_NAMES: Final[dict[int, str]] = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
"""IANA protocol numbers of the ``protocol`` column → short names."""

_ACTION_WORDS: Final = {"added": "opened", "removed": "closed", "snapshot": "seen"}
_UNKNOWN: Final = "<unknown>"


def iso_time(unix_time: int) -> str:
    """Return Unix seconds as RFC 3339 UTC, e.g. ``2025-09-02T07:05:09Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_time))


def _text(value: ColumnValue) -> str:
    return "" if value is None else str(value)


def endpoint(address: ColumnValue, port: ColumnValue) -> str:
    """Return ``address:port`` (``[v6]:port`` for IPv6); ``?`` for a missing part."""
    addr = _text(address) or "?"
    if ":" in addr:
        addr = f"[{addr}]"
    return f"{addr}:{_text(port) or '?'}"


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """An alert as display strings (missing values already replaced).

    Attributes:
        alert_id: the stable alert id.
        rule: rule name.
        host: ``hostIdentifier``.
        hostname: the ``hostname`` decoration, or ``""``.
        action: ``added``, ``removed`` or ``snapshot``.
        verb: ``opened``, ``closed`` or ``seen``.
        process: process name, or ``<unknown>``.
        pid: pid as text, or ``?``.
        path: executable path, or ``""``.
        cmdline: command line, or ``""``.
        user: user name, else ``uid N``, else ``<unknown>``.
        remote: remote ``address:port``.
        local: local ``address:port``.
        protocol: ``tcp``, ``udp``, ... or the number; ``?`` when missing.
        direction: ``inbound``, ``outbound``, ``listening`` or ``<unknown>``.
        community_id: Community ID v1 flow hash, or ``""``.
        query: logged query name.
        time: event time as RFC 3339 UTC.
    """

    alert_id: str
    rule: str
    host: str
    hostname: str
    action: str
    verb: str
    process: str
    pid: str
    path: str
    cmdline: str
    user: str
    remote: str
    local: str
    protocol: str
    direction: str
    community_id: str
    query: str
    time: str


def facts(alert: Alert) -> AlertFacts:
    """Return the display strings of ``alert``."""
    ev = alert.event
    col = ev.column
    proto = col("protocol")
    username = _text(col("username"))
    uid = col("uid")
    user = username or (f"uid {uid}" if uid is not None else _UNKNOWN)
    return AlertFacts(
        alert_id=alert.id,
        rule=alert.rule,
        host=ev.host_identifier,
        hostname=ev.decorations.get("hostname", ""),
        action=ev.action,
        verb=_ACTION_WORDS.get(ev.action, ev.action),
        process=_text(col("name")) or _UNKNOWN,
        pid=_text(col("pid")) or "?",
        path=_text(col("path")),
        cmdline=_text(col("cmdline")),
        user=user,
        remote=endpoint(col("remote_address"), col("remote_port")),
        local=endpoint(col("local_address"), col("local_port")),
        protocol=(
            PROTOCOL_NAMES.get(proto, str(proto)) if isinstance(proto, int) else _text(proto) or "?"
        ),
        direction=_text(col("direction")) or _UNKNOWN,
        community_id=_text(col("community_id")),
        query=ev.name,
        time=iso_time(ev.unix_time),
    )


def summary_line(f: AlertFacts) -> str:
    """One line: ``[rule] host: process (pid N, user) opened tcp connection to remote``.

    A listener reads ``... started listening on tcp 0.0.0.0:22`` (``stopped`` when
    removed), since it has no remote end.
    """
    who = f"[{f.rule}] {f.host}: {f.process} (pid {f.pid}, {f.user})"
    if f.direction == "listening":
        verb = {"added": "started listening", "removed": "stopped listening"}.get(
            f.action, f"{f.verb} listening"
        )
        return f"{who} {verb} on {f.protocol} {f.local}"
    arrow = "from" if f.direction == "inbound" else "to"
    return f"{who} {f.verb} {f.protocol} connection {arrow} {f.remote}"
