"""osquery's rules for packs, the filesystem config and flagfiles (osquery 5.23, ``a5b14f63``).

Packs (``Pack::initialize``, osquery/config/packs.cpp): the keys osquery reads at the
top of a pack are ``discovery`` (a list of SQL strings; every one must return a row
for the pack to run), ``platform``, ``version``, ``shard``, ``oncall`` and ``queries``;
in each query ``query`` (required), ``interval`` (seconds, 1 to 604800, 3600 when
absent), ``snapshot`` (default false), ``removed`` (default true), ``denylist``,
``startup_priority``, ``shard``, ``platform`` and ``version``. Anything else is
ignored without a word; the validator refuses it, except ``description`` and
``value``, which packs carry for people. A query is skipped when its name starts with
``query.``, ``cache.`` or ``config_views.`` or ends in ``epoch`` or ``counter``
(``kReservedDbPrefixes``/``kReservedDbSuffixes``, osquery/database/database.cpp), or
repeats a name of the pack.

Discovery results are cached for ``--pack_refresh_interval`` seconds (3600 by default,
``Pack::checkDiscovery``): a pack whose discovery failed stays off that long.

Config (``Config::update``, osquery/config/config.cpp): ``packs`` maps a pack name to
the path of a pack file (read by the filesystem config plugin) or to the pack itself.

Flagfiles: one ``--flag=value`` per line, ``#`` starts a comment (gflags). osqueryd
reads ``/etc/osquery/osquery.flags.default`` only when no ``--flagfile`` is given
(``kBackupDefaultFlagfile``, osquery/core/init.cpp); osquery's packaged
``osqueryd.service`` passes ``--flagfile /etc/osquery/osquery.flags``
(tools/deployment/linux_packaging).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "FLAGS",
    "config_problems",
    "flagfile_problems",
    "pack_problems",
    "parse_flagfile",
    "parse_json_strict",
]

_PACK_KEYS = frozenset({"discovery", "platform", "version", "shard", "oncall", "queries"})
_QUERY_KEYS = frozenset(
    {
        "query",
        "interval",
        "snapshot",
        "removed",
        "denylist",
        "startup_priority",
        "shard",
        "platform",
        "version",
    }
)
_PEOPLE_KEYS = frozenset({"description", "value"})
_RESERVED_PREFIXES = ("query.", "cache.", "config_views.")
_RESERVED_SUFFIXES = ("epoch", "counter")
MAX_INTERVAL_SECS = 604800

FLAGS: dict[str, str] = {
    "config_plugin": "osquery/config/config.cpp",
    "config_path": "plugins/config/filesystem_config.cpp",
    "pack_refresh_interval": "osquery/config/packs.cpp",
    "disable_extensions": "osquery/extensions/extensions.cpp",
    "extensions_socket": "osquery/extensions/extensions.cpp",
    "extensions_autoload": "osquery/extensions/extensions.cpp",
    "extensions_timeout": "osquery/extensions/extensions.cpp",
    "extensions_interval": "osquery/extensions/extensions.cpp",
    "extensions_require": "osquery/extensions/extensions.cpp",
    "logger_plugin": "osquery/logger/logger.cpp",
    "logger_event_type": "osquery/logger/logger.cpp",
    "logger_path": "plugins/logger/filesystem_logger.cpp",
    "logger_mode": "plugins/logger/filesystem_logger.cpp",
    "logger_rotate": "plugins/logger/filesystem_logger.cpp",
    "logger_rotate_size": "plugins/logger/filesystem_logger.cpp",
    "logger_rotate_max_files": "plugins/logger/filesystem_logger.cpp",
    "host_identifier": "osquery/core/system.cpp",
    "database_path": "osquery/database/database.cpp",
}
"""The osquery flags this project sets, and the file of osquery 5.23 that defines each.
A flag not listed here is refused until someone checks where osquery defines it."""

_FLAG_LINE = re.compile(r"--([a-z0-9_]+)(?:=(.*))?")


def parse_json_strict(text: str) -> Any:
    """JSON with duplicate keys refused (which of two a reader keeps is not portable)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    return json.loads(text, object_pairs_hook=pairs)


def name_problems(name: str) -> list[str]:
    problems = []
    if name.startswith(_RESERVED_PREFIXES):
        problems.append(f"query name {name!r} starts with a prefix osquery reserves; it is skipped")
    if name.endswith(_RESERVED_SUFFIXES):
        problems.append(f"query name {name!r} ends in epoch/counter, which osquery reserves")
    return problems


def pack_problems(pack: Any, where: str = "pack") -> list[str]:
    """Problems of an osquery pack (the JSON object of a pack file)."""
    if not isinstance(pack, dict):
        return [f"{where}: a pack is a JSON object"]
    problems = [f"{where}: osquery ignores the key {k!r}" for k in pack if k not in _PACK_KEYS]
    discovery = pack.get("discovery", [])
    if not isinstance(discovery, list) or not all(isinstance(q, str) for q in discovery):
        problems.append(f"{where}: discovery must be a list of SQL strings")
    queries = pack.get("queries")
    if not isinstance(queries, dict) or not queries:
        return [*problems, f"{where}: queries must be a non-empty object"]
    for name, query in queries.items():
        place = f"{where}.queries.{name}"
        problems += [f"{place}: {p}" for p in name_problems(name)]
        if not isinstance(query, dict):
            problems.append(f"{place}: must be an object")
            continue
        unknown = set(query) - _QUERY_KEYS - _PEOPLE_KEYS
        problems += [f"{place}: osquery ignores the key {k!r}" for k in sorted(unknown)]
        if not isinstance(query.get("query"), str) or not query["query"].strip():
            problems.append(f"{place}: no query string; osquery skips it")
        interval = query.get("interval")
        if interval is None:
            problems.append(f"{place}: no interval; osquery uses 3600 s")
        elif isinstance(interval, bool) or not isinstance(interval, int):
            problems.append(f"{place}: interval must be a number of seconds")
        elif not 1 <= interval <= MAX_INTERVAL_SECS:
            problems.append(f"{place}: interval {interval} outside 1..{MAX_INTERVAL_SECS}")
        for key in ("snapshot", "removed", "denylist"):
            if key in query and not isinstance(query[key], bool):
                problems.append(f"{place}: {key} should be true or false")
    return problems


def config_problems(config: Any) -> list[str]:
    """Problems of an osquery.conf that names packs by path."""
    if not isinstance(config, dict):
        return ["osquery.conf: the root must be a JSON object"]
    problems = []
    packs = config.get("packs", {})
    if not isinstance(packs, dict):
        return ["osquery.conf: packs must be an object"]
    for name, value in packs.items():
        if isinstance(value, str):
            if not value.startswith("/"):
                problems.append(f"osquery.conf: pack {name!r}: use an absolute path")
        elif isinstance(value, dict):
            problems += pack_problems(value, f"osquery.conf pack {name!r}")
        else:
            problems.append(f"osquery.conf: pack {name!r} must be a path or an object")
    return problems


def parse_flagfile(text: str) -> tuple[dict[str, str], list[str]]:
    """``--name=value`` lines → {name: value}; blank lines and ``#`` comments skipped."""
    flags: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _FLAG_LINE.fullmatch(line)
        if not match:
            problems.append(f"line {number}: not a --flag=value line: {line!r}")
            continue
        name, value = match[1], match[2] if match[2] is not None else "true"
        if name in flags:
            problems.append(f"line {number}: --{name} given twice (the last one wins)")
        flags[name] = value
    return flags, problems


def flagfile_problems(text: str, *, fleetd: bool = False) -> list[str]:
    """Problems of a flagfile; ``fleetd``: one packaged with ``fleetctl package``.

    fleetd passes its flagfile (``<root>/osquery.flags``) and then its own
    ``--host_identifier`` and ``--database_path`` after it, and ``--extensions_autoload``
    when it manages extensions itself (orbit/cmd/orbit/orbit.go): those lines of a
    packaged flagfile would be overridden, so they are refused here.
    """
    flags, problems = parse_flagfile(text)
    for name in flags:
        if name not in FLAGS:
            problems.append(f"--{name}: not a flag this project checked in osquery's source")
    if fleetd:
        for name in ("host_identifier", "database_path"):
            if name in flags:
                problems.append(f"--{name}: fleetd sets it after the flagfile; it has no effect")
    for name in ("extensions_timeout", "extensions_interval", "pack_refresh_interval"):
        if name in flags and not flags[name].isdigit():
            problems.append(f"--{name}={flags[name]}: expected whole seconds")
    return problems
