"""SQL over extension tables, for the osqueryd stand-in (a test double, not osquery).

osqueryd exposes extension tables to SQLite as virtual tables. Python's
``sqlite3`` has no virtual tables, so the stand-in *materialises* them: every
query run opens a fresh in-memory SQLite connection, and

1. for every attached extension table calls ``call("table", name,
   {"action": "columns"})`` and creates a table with the declared column
   types (what a new osqueryd connection does in xCreate;
   upstream osquery 5.23 osquery/sql/virtual_table.cpp, osquery/registry/registry_interface.cpp);
2. prepares the statement once under an SQLite authorizer to learn which
   tables and columns it reads;
3. for each table read calls ``call("table", name, {"action": "generate",
   "context": ...})`` once (osquery 5.23
   osquery/core/tables.cpp setRequestFromContext) and loads the
   rows, converted per column type (docs/design/osquery-interfaces.md §3;
   osquery/sql/dynamic_table_row.cpp);
4. runs the SQL and returns typed rows, NULL as "" (``--nullvalue``;
   osquery/sql/sqlite_util.cpp readRows).

Differences from osqueryd: ``generate`` is called once per table per query,
never once per outer row of a JOIN, and constraint lists are always empty
(SQLite re-applies the WHERE clause, so results match); REQUIRED columns are
not enforced; hidden column aliases are not created; only one SQL statement
per query is accepted; ``getQueryColumns`` reports "UNKNOWN" for expression
columns where osqueryd would infer a type from the query plan.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from osqueryd_standin.client import CallResult, ExtensionCallError
from osqueryd_standin.errors import StandinQueryError
from osqueryd_standin.registry import Registry
from osqueryd_standin.routes import (
    ColumnDef,
    TableDefinition,
    build_generate_context,
    parse_routes,
)
from osqueryd_standin.values import (
    KNOWN_TYPES,
    UNKNOWN,
    SqlValue,
    TypedValue,
    bytes_to_str,
    cast_to_string,
    convert_for_column,
    strtoll_base10,
)

__all__ = ["BuiltinTable", "SqlEngine", "TableCaller", "TypedRow"]

log = logging.getLogger("osqueryd_standin.sql")

TypedRow = dict[str, TypedValue]
"""One result row: column name → int, float or str (NULL is "")."""

TableCaller = Callable[[int, str, str, Mapping[str, str]], CallResult]
"""``caller(uuid, registry, item, request)``; raises ExtensionCallError."""

_ROWID_NAMES = frozenset({"rowid", "oid", "_rowid_"})
_COLUMNS_VIEW = "__standin_query_columns"


@dataclass(frozen=True)
class BuiltinTable:
    """A table the stand-in serves itself.

    Attributes:
        name: table name.
        columns: declared columns.
        rows: called on every query run that reads the table; returns string
            maps, converted like extension rows.
    """

    name: str
    columns: tuple[ColumnDef, ...]
    rows: Callable[[], list[dict[str, str]]]


@dataclass(frozen=True)
class _Attached:
    uuid: int
    definition: TableDefinition


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _create_table(conn: sqlite3.Connection, name: str, columns: Sequence[ColumnDef]) -> None:
    cols = ", ".join(f"{_quote(c.name)} {c.type}" for c in columns)
    conn.execute(f"CREATE TABLE {_quote(name)} ({cols})")


class SqlEngine:
    """Runs SQL over extension tables and built-in tables.

    Args:
        registry: where attached extension tables are looked up.
        caller: makes ``call()`` on an extension (fresh connection per call).
        builtins: the stand-in's own tables.
    """

    def __init__(
        self, registry: Registry, caller: TableCaller, builtins: Sequence[BuiltinTable]
    ) -> None:
        self._registry = registry
        self._caller = caller
        self._builtins = {b.name.lower(): b for b in builtins}

    def _open(self) -> tuple[sqlite3.Connection, dict[str, _Attached]]:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.text_factory = bytes_to_str
        for builtin in self._builtins.values():
            _create_table(conn, builtin.name, builtin.columns)
        attached: dict[str, _Attached] = {}
        for name, uuid in sorted(self._registry.external_tables().items()):
            try:
                result = self._caller(uuid, "table", name, {"action": "columns"})
            except ExtensionCallError as exc:
                log.warning("Cannot attach table %s: extension call failed: %s", name, exc)
                continue
            if result.code != 0:
                log.warning("Cannot attach table %s: %s", name, result.message)
                continue
            definition = parse_routes(name, result.response)
            if not definition.columns:
                log.warning("Cannot attach table %s: no columns", name)
                continue
            try:
                _create_table(conn, name, definition.columns)
                for alias in definition.aliases:
                    conn.execute(f"CREATE VIEW {_quote(alias)} AS SELECT * FROM {_quote(name)}")
            except sqlite3.Error as exc:
                log.warning("Cannot attach table %s: %s", name, exc)
                continue
            attached[name.lower()] = _Attached(uuid, definition)
        return conn, attached

    @staticmethod
    def _reads(conn: sqlite3.Connection, sql: str) -> dict[str, set[str]]:
        """Prepare ``sql`` (via EXPLAIN) and collect table → columns read."""
        reads: dict[str, set[str]] = {}

        def authorizer(
            action: int, arg1: str | None, arg2: str | None, _db: str | None, _src: str | None
        ) -> int:
            if action == sqlite3.SQLITE_READ and arg1:
                cols = reads.setdefault(arg1.lower(), set())
                if arg2:
                    cols.add(arg2.lower())
            return sqlite3.SQLITE_OK

        conn.set_authorizer(authorizer)
        try:
            conn.execute("EXPLAIN " + sql).fetchall()
        except sqlite3.Error as exc:
            raise StandinQueryError(str(exc)) from exc
        finally:
            conn.set_authorizer(None)
        return reads

    def _fill(self, conn: sqlite3.Connection, table: _Attached, used: set[str]) -> None:
        definition = table.definition
        context = build_generate_context(definition, used)
        try:
            result = self._caller(
                table.uuid, "table", definition.name, {"action": "generate", "context": context}
            )
        except ExtensionCallError as exc:
            raise StandinQueryError(f"Extension call failed: {exc}") from exc
        if result.code != 0:
            raise StandinQueryError(result.message)
        self._load(conn, definition.name, definition.columns, result.response, used)

    @staticmethod
    def _load(
        conn: sqlite3.Connection,
        name: str,
        columns: Sequence[ColumnDef],
        rows: Sequence[Mapping[str, str]],
        used: set[str],
    ) -> None:
        names = ", ".join(_quote(c.name) for c in columns)
        marks = ", ".join("?" for _ in columns)
        insert = f"INSERT INTO {_quote(name)} (rowid, {names}) VALUES (?, {marks})"
        insert_auto = f"INSERT INTO {_quote(name)} ({names}) VALUES ({marks})"
        reads_rowid = bool(used & _ROWID_NAMES)
        for index, row in enumerate(rows):
            plain = dict(row)
            values: list[SqlValue] = [convert_for_column(plain, c.name, c.type) for c in columns]
            rowid: int | None = index
            if "rowid" in plain:
                rowid = strtoll_base10(plain["rowid"])
                if rowid is None and reads_rowid:
                    raise StandinQueryError("SQL logic error")
            try:
                conn.execute(insert, [rowid, *values])
            except sqlite3.IntegrityError:
                conn.execute(insert_auto, values)

    def query(self, sql: str) -> list[TypedRow]:
        """Run one SQL statement.

        Args:
            sql: the statement.

        Returns:
            Rows as column name → int/float/str, NULL as "" (duplicate column
            names keep the last value, like osqueryd's std::map rows).

        Raises:
            StandinQueryError: SQLite error, extension error status, or failed
                extension call ("Extension call failed: ...").
        """
        if not sql.strip():
            return []
        conn, attached = self._open()
        try:
            reads = self._reads(conn, sql)
            for table_name, used in reads.items():
                if table_name in attached:
                    self._fill(conn, attached[table_name], used)
                elif table_name in self._builtins:
                    builtin = self._builtins[table_name]
                    self._load(conn, builtin.name, builtin.columns, builtin.rows(), used)
            try:
                cursor = conn.execute(sql)
                description = cursor.description or ()
                names = [str(d[0]) for d in description]
                raw_rows = cursor.fetchall()
            except sqlite3.Error as exc:
                raise StandinQueryError(str(exc)) from exc
        finally:
            conn.close()
        results: list[TypedRow] = []
        for raw in raw_rows:
            row: TypedRow = {}
            for col, value in zip(names, raw, strict=True):
                row[col] = _typed(value)
            results.append(row)
        return results

    def query_strings(self, sql: str) -> list[dict[str, str]]:
        """Like :meth:`query`, with every value cast to a string (castVariant)."""
        return [{k: cast_to_string(v) for k, v in row.items()} for row in self.query(sql)]

    def query_columns(self, sql: str) -> list[tuple[str, str]]:
        """Names and types of the result columns, without running the query.

        Returns:
            (name, type) pairs; the type is the declared type of a table
            column, "UNKNOWN" for expressions (osquery/sql/sqlite_util.cpp
            getQueryColumnsInternal, minus the query-plan inference).

        Raises:
            StandinQueryError: SQLite error (e.g. "no such table: x").
        """
        body = sql.strip().rstrip(";").strip()
        conn, _ = self._open()
        try:
            try:
                conn.execute(f"CREATE TEMP VIEW {_quote(_COLUMNS_VIEW)} AS {body}")
                info = conn.execute(f"PRAGMA table_info({_quote(_COLUMNS_VIEW)})").fetchall()
            except sqlite3.Error as exc:
                raise StandinQueryError(str(exc)) from exc
        finally:
            conn.close()
        columns: list[tuple[str, str]] = []
        for entry in info:
            decl = str(entry[2] or "").upper()
            columns.append((str(entry[1]), decl if decl in KNOWN_TYPES else UNKNOWN))
        return columns


def _typed(value: object) -> TypedValue:
    """SQLite result value → osqueryd's RowDataTyped (NULL → "")."""
    if value is None:
        return ""
    if isinstance(value, bool):  # pragma: no cover - sqlite3 never returns bool
        return int(value)
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, bytes):
        return bytes_to_str(value)
    return str(value)  # pragma: no cover
