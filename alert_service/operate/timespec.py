"""Durations and points in time as an operator types them.

* a duration: ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or sums such as ``1h30m``
  (units s, m, h, d, w; a bare number is seconds);
* a point in time: an ISO 8601 date or date-time (``2026-12-05``,
  ``2026-12-05T14:00:00Z``, ``2026-12-05 14:00+01:00``; without a zone it is UTC), or a
  duration meaning "that long ago" (``--since 2h``).

Results are seconds (float) and Unix seconds.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_time", "parse_duration", "parse_time"]

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``2h``, ``1h30m``, ``45``).

    Raises:
        ValueError: not a duration.
    """
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 15m, 2h, 1h30m, 7d)")
    return total


def parse_time(text: str, now: float) -> float:
    """Unix seconds of ``text``: ISO 8601 (UTC unless a zone is given) or a duration ago.

    Raises:
        ValueError: neither.
    """
    value = text.strip()
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (examples: 2h = two hours ago, 2026-12-05T14:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def format_time(unix: float | None) -> str:
    """``2026-12-05T14:00:00Z`` for ``unix`` (whole seconds), ``-`` for None."""
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
