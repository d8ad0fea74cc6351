"""osquery pack files, read the way osqueryd reads them.

Part of the osqueryd stand-in (a test double, not osquery).
(Upstream osquery 5.23
osquery/config/packs.cpp Pack::initialize, splayValue, getMachineShard,
checkDiscovery; osquery/core/system.cpp checkPlatform; osquery/utils/json/json.cpp
valueToSize/valueToBool.)

A pack is a JSON object with ``queries`` (name → {query, interval, snapshot,
removed, platform, version, shard, denylist, startup_priority, ...}),
``discovery`` (SQL list; every query must return rows), ``platform``,
``version`` and ``shard``. The logged name of a query is
``"pack" + delimiter + pack + delimiter + query``.

Not emulated: the denylist (parsed, never applied), ``oncall``, and pack
globs/inline packs inside an osquery.conf (pass each pack separately).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from osqueryd_standin.registry import version_at_least

__all__ = [
    "EMULATED_OSQUERY_VERSION",
    "MAX_QUERY_INTERVAL",
    "Pack",
    "ScheduledQuery",
    "check_platform",
    "load_pack",
    "machine_shard",
    "splay_value",
]

EMULATED_OSQUERY_VERSION = "5.23.1"
"""The osquery version the stand-in claims for pack/query ``version`` checks."""

MAX_QUERY_INTERVAL = 604800
_UINT64_MAX = 2**64 - 1
_RESERVED_PREFIXES = ("query.", "cache.", "config_views.")
_RESERVED_SUFFIXES = ("epoch", "counter")


def _value_to_size(value: Any) -> int:
    """JSON::valueToSize: number → uint64, numeric string → uint64, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if value >= 0 else 0
    if isinstance(value, float):
        return int(value) if value >= 0 else 0
    if isinstance(value, str):
        digits = ""
        for ch in value.strip():
            if not ch.isdigit() or not ch.isascii():
                break
            digits += ch
        return int(digits) if digits else 0
    return 0


def _value_to_bool(value: Any) -> bool:
    """JSON::valueToBool: true, "true"/"t" (any case), or a non-zero number."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.lower() in ("true", "t")
    if isinstance(value, int | float):
        return int(value) != 0
    return False


def check_platform(platform: str) -> bool:
    """osquery's checkPlatform on this host ("" / "any" / "all" always pass)."""
    if not platform or platform == "null":
        return True
    if "any" in platform or "all" in platform:
        return True
    is_linux = sys.platform.startswith("linux")
    if is_linux and any(p in platform for p in ("linux", "ubuntu", "centos")):
        return True
    if os.name == "posix" and "posix" in platform:
        return True
    sdk_platform = "linux" if is_linux else sys.platform
    return sdk_platform in platform


def machine_shard(hostname: str | None = None) -> int:
    """osquery's getMachineShard: first SHA-1 byte of the hostname * 100 / 255."""
    name = hostname if hostname is not None else socket.gethostname()
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()
    return (int(digest[:2], 16) * 100) // 255


def splay_value(interval: int, percent: int, rng: random.Random | None = None) -> int:
    """osquery's splayValue: uniform in interval ± floor(interval * percent / 100).

    The lower bound is at least 1; percent 0 or > 100 means no splay. An
    interval of 2 at 10 % stays 2.
    """
    if percent == 0 or percent > 100:
        return interval
    difference = int(interval * (percent / 100))
    high = interval + difference
    low = max(1, interval - difference)
    if high == low:
        return high
    return (rng or random.Random()).randint(low, high)


@dataclass(frozen=True)
class ScheduledQuery:
    """One query of a pack.

    Attributes:
        pack_name: the pack.
        query_name: the query's key in ``queries``.
        logged_name: ``pack<delim><pack><delim><query>``.
        sql: the SQL.
        interval: seconds, 1..604800.
        splayed_interval: the interval actually used (after splay).
        snapshot: snapshot query (log full results each run).
        removed: log removed rows (false hides them; the counter still bumps).
        denylist: parsed only.
        startup_priority: run on the first scheduler tick when set.
    """

    pack_name: str
    query_name: str
    logged_name: str
    sql: str
    interval: int
    splayed_interval: int
    snapshot: bool = False
    removed: bool = True
    denylist: bool = True
    startup_priority: int | None = None


@dataclass
class Pack:
    """A loaded pack.

    Attributes:
        name: pack name.
        source: file path or "<inline>".
        valid: False when the pack-level shard/platform/version excludes it.
        discovery: discovery SQL.
        queries: scheduled queries sorted by (startup_priority, name).
        refresh_interval_secs: ``--pack_refresh_interval``.
    """

    name: str
    source: str
    valid: bool
    discovery: list[str] = field(default_factory=list)
    queries: list[ScheduledQuery] = field(default_factory=list)
    refresh_interval_secs: float = 3600.0
    _cache_time: float = 0.0
    _cache_result: bool = False
    active: bool = False

    def should_execute(self, now: float, count_rows: Callable[[str], int]) -> bool:
        """Pack::shouldPackExecute: valid and discovery passes (cached).

        Discovery runs when the cache is older than
        ``refresh_interval_secs``; every query must succeed and return a row.

        Args:
            now: unix time, seconds.
            count_rows: runs SQL and returns the row count; raises on error.
        """
        if not self.valid:
            self.active = False
            return False
        if now - self._cache_time < self.refresh_interval_secs:
            self.active = self._cache_result
            return self.active
        self._cache_time = now
        result = True
        for sql in self.discovery:
            try:
                if count_rows(sql) == 0:
                    result = False
                    break
            except Exception:
                result = False
                break
        self._cache_result = result
        self.active = result
        return result


def _read_source(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Any, str]:
    if isinstance(source, Mapping):
        return dict(source), "<inline>"
    path = Path(source)
    return json.loads(path.read_text(encoding="utf-8")), str(path)


def load_pack(
    name: str,
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    delimiter: str = "_",
    splay_percent: int = 10,
    default_interval: int = 3600,
    refresh_interval_secs: float = 3600.0,
    splays: dict[str, tuple[int, int]] | None = None,
    hostname: str | None = None,
) -> Pack:
    """Load and validate a pack.

    Args:
        name: pack name (used in logged names).
        source: path to a JSON pack file, or the parsed object.
        delimiter: ``--pack_delimiter``.
        splay_percent: ``--schedule_splay_percent``; values ≤ 1 mean 10.
        default_interval: ``--schedule_default_interval``, seconds.
        refresh_interval_secs: ``--pack_refresh_interval``, seconds.
        splays: query name → (interval, splayed) memory, reused when the
            interval is unchanged (osqueryd keeps it in its database).
        hostname: for the shard check (default: this host).

    Returns:
        The pack. Invalid queries are skipped, as osqueryd skips them.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not JSON or not an object.
    """
    data, where = _read_source(source)
    if not isinstance(data, dict):
        raise ValueError(f"pack {name}: not a JSON object")
    if splay_percent <= 1:
        splay_percent = 10
    splays = splays if splays is not None else {}
    shard = _value_to_size(data.get("shard", 0))
    platform = data.get("platform") if isinstance(data.get("platform"), str) else ""
    version = data.get("version") if isinstance(data.get("version"), str) else ""
    pack = Pack(name, where, valid=False, refresh_interval_secs=refresh_interval_secs)
    if (shard > 0 and shard < machine_shard(hostname)) or not check_platform(str(platform)):
        return pack
    if version and version != "null" and not version_at_least(version, EMULATED_OSQUERY_VERSION):
        return pack
    pack.valid = True
    pack.discovery = [q for q in data.get("discovery") or [] if isinstance(q, str)]
    queries = data.get("queries")
    if not isinstance(queries, dict):
        return pack
    seen: set[str] = set()
    for query_name, spec in queries.items():
        if not isinstance(spec, dict):
            continue
        query = _load_query(
            pack_name=name,
            query_name=str(query_name),
            spec=spec,
            delimiter=delimiter,
            default_interval=default_interval,
            hostname=hostname,
        )
        if query is None or query.query_name in seen:
            continue
        seen.add(query.query_name)
        previous = splays.get(query.query_name)
        if previous is not None and previous[0] == query.interval and previous[1] > 0:
            splayed = previous[1]
        else:
            splayed = splay_value(query.interval, splay_percent)
            splays[query.query_name] = (query.interval, splayed)
        pack.queries.append(_with_splay(query, splayed))
    pack.queries.sort(
        key=lambda q: (
            _UINT64_MAX if q.startup_priority is None else q.startup_priority,
            q.query_name,
        )
    )
    return pack


def _with_splay(query: ScheduledQuery, splayed: int) -> ScheduledQuery:
    return ScheduledQuery(
        query.pack_name,
        query.query_name,
        query.logged_name,
        query.sql,
        query.interval,
        splayed,
        query.snapshot,
        query.removed,
        query.denylist,
        query.startup_priority,
    )


def _load_query(
    *,
    pack_name: str,
    query_name: str,
    spec: Mapping[str, Any],
    delimiter: str,
    default_interval: int,
    hostname: str | None,
) -> ScheduledQuery | None:
    if "shard" in spec:
        shard = _value_to_size(spec["shard"])
        if shard > 0 and shard < machine_shard(hostname):
            return None
    if isinstance(spec.get("platform"), str) and not check_platform(spec["platform"]):
        return None
    version = spec.get("version")
    if (
        isinstance(version, str)
        and version
        and version != "null"
        and not version_at_least(version, EMULATED_OSQUERY_VERSION)
    ):
        return None
    if query_name.startswith(_RESERVED_PREFIXES) or query_name.endswith(_RESERVED_SUFFIXES):
        return None
    sql = spec.get("query")
    if not isinstance(sql, str) or not sql:
        return None
    interval = _value_to_size(spec["interval"]) if "interval" in spec else default_interval
    if interval <= 0 or interval > MAX_QUERY_INTERVAL:
        return None
    startup = spec.get("startup_priority")
    return ScheduledQuery(
        pack_name=pack_name,
        query_name=query_name,
        logged_name=f"pack{delimiter}{pack_name}{delimiter}{query_name}",
        sql=sql,
        interval=interval,
        splayed_interval=interval,
        snapshot=_value_to_bool(spec.get("snapshot", False)),
        removed=_value_to_bool(spec.get("removed", True)),
        denylist=_value_to_bool(spec.get("denylist", True)),
        startup_priority=None if startup is None else _value_to_size(startup),
    )
