"""The column contract of the ``tracked_connections`` table.

This module is the single source of truth for the table's columns: the routes
sent to osqueryd, the pack lint, the alert service's typed parsing and the
column reference in docs/ are all derived from :data:`COLUMNS`.

Types are osquery's column type names (osquery/core/sql/column.cpp): ``TEXT``,
``INTEGER`` (32-bit), ``BIGINT`` (64-bit). A value that is unknown for a row is
left out of that row, which osquery reads as NULL; it is never sent as the text
``"None"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CHANGING_COLUMNS",
    "COLUMNS",
    "COLUMN_NAMES",
    "COLUMN_TYPES",
    "MAX_TEXT",
    "STABLE_COLUMNS",
    "TRUNCATION_MARKER",
    "Column",
    "OsqueryType",
    "cap_text",
]

OsqueryType = Literal["TEXT", "INTEGER", "BIGINT"]


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the table.

    Attributes:
        name: column name, as osquery shows it.
        type: osquery column type name.
        description: one line for the column reference.
        stable: True when the value never changes during one connection's life,
            so a differential pack may select it without churning.
        max_chars: for text a process controls (its name, path, command
            line), the most characters served; a longer value is cut and ends
            with :data:`TRUNCATION_MARKER`. None where the value is bounded by
            its nature (addresses, states).
    """

    name: str
    type: OsqueryType
    description: str
    stable: bool = True
    max_chars: int | None = None


TRUNCATION_MARKER: Final = "...[truncated]"
"""Ends a value that was cut to its column's ``max_chars``."""
_NAME_CHARS: Final = 256
_PATH_CHARS: Final = 4096
"""Linux's PATH_MAX (include/uapi/linux/limits.h)."""

COLUMNS: Final[tuple[Column, ...]] = (
    Column("pid", "INTEGER", "Process id owning the socket; NULL when no owner is known"),
    Column(
        "family",
        "INTEGER",
        "Address family: 2 = IPv4, 10 = IPv6 on every OS; 17 = packet socket (Linux AF_PACKET)",
    ),
    Column(
        "protocol",
        "INTEGER",
        "6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMPv6, other IP protocol numbers for raw sockets;"
        " for a packet socket its Ethernet protocol (3 = every frame, 2048 = IPv4)",
    ),
    Column("local_address", "TEXT", "Local IP address"),
    Column("local_port", "INTEGER", "Local port"),
    Column("remote_address", "TEXT", "Remote IP address; '' when there is none"),
    Column("remote_port", "INTEGER", "Remote port; 0 when there is none"),
    Column(
        "remote_hostname",
        "TEXT",
        "The name this host's DNS answers gave for the remote address shortly before the"
        " connection began (the name asked, before any CNAME), lower-case; NULL when none"
        " was seen (see docs/extension.md, DNS names)",
    ),
    Column(
        "remote_hostname_source",
        "TEXT",
        "Evidence for remote_hostname: process (an answer delivered to this process's own"
        " DNS socket in its network namespace), namespace (an answer seen in its network"
        " namespace), host (seen only in another namespace of this host: a guess)",
    ),
    Column("state", "TEXT", "TCP state (e.g. ESTABLISHED, LISTEN); '' for UDP", stable=False),
    Column("socket", "BIGINT", "Socket inode, where the OS has one (Linux)"),
    Column("net_namespace", "BIGINT", "Network namespace inode (Linux)"),
    Column(
        "interface",
        "TEXT",
        "Interface a packet socket is bound to, '' for every interface; NULL for other sockets",
        max_chars=_NAME_CHARS,
    ),
    Column("direction", "TEXT", "inbound, outbound, listening or ''"),
    Column(
        "status",
        "TEXT",
        "TCP attempt outcome: connected, refused, unreachable, timed_out; '' for listeners and UDP",
    ),
    Column("community_id", "TEXT", "Community ID v1 flow hash of the 5-tuple"),
    Column(
        "name",
        "TEXT",
        "Owning process name: the kernel's name of the process (comm), made whole where the"
        " kernel cut it to 15 characters: the base name of the executable, or of the first or"
        " second argument (an interpreted script), that starts with it",
        max_chars=_NAME_CHARS,
    ),
    Column("path", "TEXT", "Owning process executable path", max_chars=_PATH_CHARS),
    Column(
        "cmdline",
        "TEXT",
        "Owning process command line, arguments joined by spaces",
        max_chars=_PATH_CHARS,
    ),
    Column("uid", "BIGINT", "Owning process real user id"),
    Column("username", "TEXT", "Owning process user name", max_chars=_NAME_CHARS),
    Column("parent", "INTEGER", "Parent process id of the owner"),
    Column("parent_name", "TEXT", "Parent process name", max_chars=_NAME_CHARS),
    Column("parent_path", "TEXT", "Parent process executable path", max_chars=_PATH_CHARS),
    Column("start_time", "BIGINT", "Owning process start time, seconds since the Unix epoch"),
    Column("first_seen", "BIGINT", "Seconds since the Unix epoch when first observed"),
    Column("last_seen", "BIGINT", "Seconds since the Unix epoch when last observed", stable=False),
)

COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
MAX_TEXT: Final[dict[str, int]] = {c.name: c.max_chars for c in COLUMNS if c.max_chars}
"""Column name -> most characters served (the capped columns only)."""
COLUMN_TYPES: Final[dict[str, OsqueryType]] = {c.name: c.type for c in COLUMNS}
STABLE_COLUMNS: Final[frozenset[str]] = frozenset(c.name for c in COLUMNS if c.stable)
CHANGING_COLUMNS: Final[frozenset[str]] = frozenset(c.name for c in COLUMNS if not c.stable)
"""The columns that change during a connection's life (``state``, ``last_seen``)."""


def cap_text(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, ending with TRUNCATION_MARKER when cut.

    A process chooses its own name, path and arguments: a 130,000-character
    argv[0] must not make a row, and the log line carrying it, too large to
    be kept.
    """
    if len(text) <= max_chars:
        return text
    return text[: max_chars - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def markdown_reference() -> str:
    """The column reference as Markdown (docs/columns.md is this text)."""
    lines = [
        "# `tracked_connections` columns",
        "",
        "Generated from `extension/columns.py` by `python -m extension.columns`;"
        " a test keeps this file in step.",
        "",
        "A value that is unknown for a row is NULL (the key is left out of the row).",
        "*Stable* columns never change during one connection's life; the pack selects"
        " only those, so osquery logs each connection once as `added` and once as"
        " `removed`.",
        "",
        f"Text a process controls is cut to the column's most characters and then ends"
        f" with `{TRUNCATION_MARKER}`.",
        "",
        "| column | type | stable | most characters | meaning |",
        "|---|---|---|---|---|",
    ]
    for column in COLUMNS:
        stable = "yes" if column.stable else "no"
        most = str(column.max_chars) if column.max_chars else ""
        lines.append(
            f"| `{column.name}` | {column.type} | {stable} | {most} | {column.description} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
