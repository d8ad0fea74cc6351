"""Split a scheduled query's logged name into pack and query.

osquery names pack queries ``"pack" + delimiter + pack + delimiter + query`` with
``--pack_delimiter`` (default ``_``; osquery/config/packs.cpp,
docs/design/osquery-interfaces.md §5). Fleet sets the delimiter to ``/`` and names its
packs ``Global`` or ``team-<id>``, giving ``pack/Global/<query>`` (the result lines its
filesystem log destination writes, docs/design/osquery-interfaces.md §4).

With ``_`` the split is ambiguous when names contain ``_``
(``pack_tracked_connections_tracked_connections``), so known pack names are tried
first, longest first; otherwise the pack is the text up to the first ``_``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_KNOWN_PACKS", "QueryName", "parse_query_name"]

DEFAULT_KNOWN_PACKS: frozenset[str] = frozenset({"tracked_connections"})
"""Pack names of this project (packs/tracked_connections.conf)."""


@dataclass(frozen=True, slots=True)
class QueryName:
    """A logged query name and its parts.

    Attributes:
        name: the name as logged.
        pack: the pack, or None when the name is not a pack query.
        query: the query inside the pack, or the whole name.
    """

    name: str
    pack: str | None
    query: str


def parse_query_name(name: str, known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS) -> QueryName:
    """Split ``name`` into pack and query.

    Args:
        name: the ``name`` field of a result line.
        known_packs: pack names to prefer when the delimiter is ``_``.

    Returns:
        The parts. Examples: ``pack_tracked_connections_tracked_connections`` →
        (``tracked_connections``, ``tracked_connections``); ``pack/team-3/conns`` →
        (``team-3``, ``conns``); ``adhoc`` → (None, ``adhoc``).
    """
    if name.startswith("pack/"):
        parts = name.split("/", 2)
        if len(parts) == 3 and parts[1] and parts[2]:
            return QueryName(name, parts[1], parts[2])
        return QueryName(name, None, name)
    if name.startswith("pack_"):
        rest = name[len("pack_") :]
        for pack in sorted(known_packs, key=len, reverse=True):
            prefix = pack + "_"
            if rest.startswith(prefix) and len(rest) > len(prefix):
                return QueryName(name, pack, rest[len(prefix) :])
        pack, sep, query = rest.partition("_")
        if sep and pack and query:
            return QueryName(name, pack, query)
    return QueryName(name, None, name)
