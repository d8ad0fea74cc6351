"""Table plugin route lists and generate contexts, as osqueryd builds them.

Part of the osqueryd stand-in (a test double, not osquery).

* :func:`parse_routes` reads the reply to ``call("table", name,
  {"action": "columns"})`` (upstream osquery 5.23
  osquery/core/tables.cpp routeInfo, osquery/sql/virtual_table.cpp xCreate).
* :func:`build_generate_context` writes the compact ``"context"`` JSON of a
  ``generate`` request (upstream osquery 5.23
  osquery/core/tables.cpp setRequestFromContext).

Not emulated: ``columnAlias`` entries are parsed but no hidden alias column is
created; table attributes are parsed and ignored; constraint lists are always
empty (SQLite re-applies the WHERE clause, so results are the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from osqueryd_standin import jsonfmt
from osqueryd_standin.values import KNOWN_TYPES, UNKNOWN

__all__ = [
    "OPT_DEFAULT",
    "OPT_INDEX",
    "OPT_REQUIRED",
    "ColumnDef",
    "TableDefinition",
    "build_generate_context",
    "parse_routes",
]

OPT_DEFAULT = 0
OPT_INDEX = 1
OPT_REQUIRED = 2


@dataclass(frozen=True)
class ColumnDef:
    """One declared column.

    Attributes:
        name: column name.
        type: one of TEXT, INTEGER, BIGINT, UNSIGNED BIGINT, DOUBLE, BLOB or
            UNKNOWN (any other type string).
        options: ColumnOptions bits (osquery/core/sql/column.h); with
            ``--extensions_default_index`` (default true) op 0 becomes INDEX.
    """

    name: str
    type: str
    options: int = OPT_DEFAULT


@dataclass(frozen=True)
class TableDefinition:
    """A table as described by its route list.

    Attributes:
        name: the table name.
        columns: declared columns, in route order.
        aliases: table aliases (osqueryd creates a view for each).
        column_aliases: hidden alias name → target column (not materialised).
        attributes: TableAttributes bits, 0 when absent.
    """

    name: str
    columns: tuple[ColumnDef, ...]
    aliases: tuple[str, ...] = ()
    column_aliases: Mapping[str, str] = field(default_factory=dict)
    attributes: int = 0


def _parse_int(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text, 10)
    except ValueError:
        return default


def parse_routes(
    name: str, routes: Sequence[Mapping[str, str]], default_index: bool = True
) -> TableDefinition:
    """Parse a table route list.

    Args:
        name: the table name the routes belong to.
        routes: list of string maps; entries are told apart by ``"id"``
            (``column``, ``alias``, ``columnAlias``, ``attributes``); entries
            without an id, or column entries without a name, are skipped.
        default_index: ``--extensions_default_index``: turn op 0 into INDEX.

    Returns:
        The table definition (its ``columns`` may be empty; the caller decides
        whether that is an error).
    """
    columns: list[ColumnDef] = []
    aliases: list[str] = []
    column_aliases: dict[str, str] = {}
    attributes = 0
    for entry in routes:
        kind = entry.get("id")
        if kind == "column":
            col_name = entry.get("name", "")
            if not col_name:
                continue
            col_type = entry.get("type", UNKNOWN)
            if col_type not in KNOWN_TYPES:
                col_type = UNKNOWN
            options = _parse_int(entry.get("op"), OPT_DEFAULT)
            if options == OPT_DEFAULT and default_index:
                options = OPT_INDEX
            columns.append(ColumnDef(col_name, col_type, options))
        elif kind == "alias":
            alias = entry.get("alias", "")
            if alias:
                aliases.append(alias)
        elif kind == "columnAlias":
            alias_name = entry.get("name", "")
            target = entry.get("target", "")
            if alias_name and target:
                column_aliases[alias_name] = target
        elif kind == "attributes":
            attributes = _parse_int(entry.get("attributes"), 0)
    return TableDefinition(name, tuple(columns), tuple(aliases), column_aliases, attributes)


def build_generate_context(table: TableDefinition, used_columns: Iterable[str]) -> str:
    """Build the ``"context"`` string of a generate request.

    Shape (compact, keys in this order)::

        {"constraints":[{"name":<col>,"list":[],"affinity":"<TYPE>"}, ...],
         "colsUsed":[<col>, ...],"colsUsedBitset":<uint64>}

    ``constraints`` has one entry per column sorted by name (a std::map
    upstream); ``colsUsed`` lists the used columns in declaration order; bit
    *i* of ``colsUsedBitset`` is column *i*, bit 63 stands for columns 63
    and beyond (SQLite's colUsed).

    Args:
        table: the table definition from its columns route.
        used_columns: names of the columns the query reads (case-insensitive).

    Returns:
        The JSON text.
    """
    wanted = {c.lower() for c in used_columns}
    constraints: list[jsonfmt.JsonValue] = []
    seen: set[str] = set()
    for col in sorted(table.columns, key=lambda c: c.name):
        if col.name in seen:
            continue
        seen.add(col.name)
        constraints.append({"name": col.name, "list": [], "affinity": col.type})
    cols_used: list[jsonfmt.JsonValue] = []
    bitset = 0
    for index, col in enumerate(table.columns):
        if col.name.lower() in wanted:
            cols_used.append(col.name)
            bitset |= 1 << min(index, 63)
    return jsonfmt.dumps(
        {"constraints": constraints, "colsUsed": cols_used, "colsUsedBitset": bitset}
    )
