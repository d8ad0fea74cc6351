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

__all__ = ["COLUMNS", "COLUMN_NAMES", "COLUMN_TYPES", "STABLE_COLUMNS", "Column", "OsqueryType"]

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
    """

    name: str
    type: OsqueryType
    description: str
    stable: bool = True


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
    Column("state", "TEXT", "TCP state (e.g. ESTABLISHED, LISTEN); '' for UDP", stable=False),
    Column("socket", "BIGINT", "Socket inode, where the OS has one (Linux)"),
    Column("net_namespace", "BIGINT", "Network namespace inode (Linux)"),
    Column(
        "interface",
        "TEXT",
        "Interface a packet socket is bound to, '' for every interface; NULL for other sockets",
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
    ),
    Column("path", "TEXT", "Owning process executable path"),
    Column("cmdline", "TEXT", "Owning process command line, arguments joined by spaces"),
    Column("uid", "BIGINT", "Owning process real user id"),
    Column("username", "TEXT", "Owning process user name"),
    Column("parent", "INTEGER", "Parent process id of the owner"),
    Column("parent_name", "TEXT", "Parent process name"),
    Column("parent_path", "TEXT", "Parent process executable path"),
    Column("start_time", "BIGINT", "Owning process start time, seconds since the Unix epoch"),
    Column("first_seen", "BIGINT", "Seconds since the Unix epoch when first observed"),
    Column("last_seen", "BIGINT", "Seconds since the Unix epoch when last observed", stable=False),
)

COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
COLUMN_TYPES: Final[dict[str, OsqueryType]] = {c.name: c.type for c in COLUMNS}
STABLE_COLUMNS: Final[frozenset[str]] = frozenset(c.name for c in COLUMNS if c.stable)


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
        "| column | type | stable | meaning |",
        "|---|---|---|---|",
    ]
    for column in COLUMNS:
        stable = "yes" if column.stable else "no"
        lines.append(f"| `{column.name}` | {column.type} | {stable} | {column.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
