"""The osquery pack: valid JSON, valid SQL over the column contract, stable columns only."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from extension.columns import COLUMNS, STABLE_COLUMNS

PACKS = Path(__file__).resolve().parents[2] / "packs"
# osquery refuses these names (osquery/database/database.cpp; osquery-protocol-and-logs.md §5).
_RESERVED_PREFIXES = ("query.", "cache.", "config_views.")
_RESERVED_SUFFIXES = ("epoch", "counter")


def _packs() -> list[Path]:
    return sorted(PACKS.glob("*.conf"))


def _contract_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE tracked_connections ("
        + ", ".join(f"{c.name} {c.type}" for c in COLUMNS)
        + ")"
    )
    db.execute("CREATE TABLE osquery_registry (registry TEXT, name TEXT, active INTEGER)")
    return db


def _selected_columns(db: sqlite3.Connection, sql: str) -> list[str]:
    cursor = db.execute(sql)
    return [d[0] for d in cursor.description]


@pytest.mark.parametrize("pack_path", _packs(), ids=lambda p: p.name)
def test_pack_queries(pack_path: Path) -> None:
    pack: dict[str, Any] = json.loads(pack_path.read_text(encoding="utf-8"))
    assert pack["queries"], "a pack needs queries"
    db = _contract_db()
    for sql in pack.get("discovery", []):
        db.execute(sql)
    for name, query in pack["queries"].items():
        assert re.fullmatch(r"[A-Za-z0-9_]+", name)
        assert not name.startswith(_RESERVED_PREFIXES)
        assert not name.endswith(_RESERVED_SUFFIXES)
        assert query["interval"] == 2
        assert query.get("snapshot", False) is False
        assert query.get("removed", True) is True
        columns = _selected_columns(db, query["query"])
        assert columns, name
        unstable = [c for c in columns if c not in STABLE_COLUMNS]
        assert not unstable, f"{name} selects columns that change during a connection: {unstable}"
        assert "pid" in columns and "remote_address" in columns


def test_the_main_pack_exists() -> None:
    assert PACKS / "tracked_connections.conf" in _packs()
