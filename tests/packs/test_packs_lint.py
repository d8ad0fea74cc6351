"""Lint of every pack form we ship: the osquery pack and the Fleet YAML files.

Forms (upstream osquery 5.23 osquery/config/packs.cpp; fleetdm/fleet
server/fleet/queries.go, server/fleet/packs.go and the GitOps reference
https://github.com/fleetdm/fleet/blob/main/docs/Configuration/yaml-files.md; the
Fleet parsers' own rules are checked in tests/deploy/test_forms_shipped.py):

* ``packs/*.conf``: osquery JSON packs (``queries`` + ``discovery``);
* ``packs/fleet/*.yml``: ``fleetctl apply`` documents — ``kind: report`` (Fleet ≥ 4.82),
  ``kind: query`` (the deprecated alias), each on every Linux host or label-scoped, the
  ``kind: label`` of hosts with the extension, and the legacy ``kind: pack`` with the
  saved query it references;
* ``packs/fleet/gitops/``: ``default.yml`` excerpts (``reports:`` / older ``queries:``)
  whose ``- path:`` entries name ``lib/*.queries.yml`` lists.

Every query must parse in SQLite against the column contract (extension/columns.py),
select only columns that are stable over a connection's life, run every 2 s, log
differentially, and carry a name osquery accepts. YAML is read with PyYAML's safe
loader. The lint functions return problems instead of asserting, so the tests below
also prove that they catch bad input.
"""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from extension.columns import COLUMNS, STABLE_COLUMNS

PACKS = Path(__file__).resolve().parents[2] / "packs"
FLEET = PACKS / "fleet"
GITOPS = FLEET / "gitops"
# osquery refuses these names (osquery 5.23, osquery/database/database.cpp).
_RESERVED_PREFIXES = ("query.", "cache.", "config_views.")
_RESERVED_SUFFIXES = ("epoch", "counter")
_FLEET_KINDS = {"report", "query", "pack", "label"}
_VERSION = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_PLATFORMS = {"linux", "darwin", "windows", "chrome"}


# -- helpers ----------------------------------------------------------------------


def _packs() -> list[Path]:
    return sorted(PACKS.glob("*.conf"))


def _fleet_files() -> list[Path]:
    return sorted(FLEET.glob("*.yml"))


def _gitops_files() -> list[Path]:
    return sorted(GITOPS.glob("*.yml"))


def _contract_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE tracked_connections ("
        + ", ".join(f"{c.name} {c.type}" for c in COLUMNS)
        + ")"
    )
    db.execute("CREATE TABLE osquery_registry (registry TEXT, name TEXT, active INTEGER)")
    return db


def _normalise_sql(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";")


def _main_pack_sql() -> str:
    pack = json.loads((PACKS / "tracked_connections.conf").read_text(encoding="utf-8"))
    return _normalise_sql(pack["queries"]["tracked_connections"]["query"])


def name_problems(name: object) -> list[str]:
    """Problems of a scheduled query name under osquery's rules (database.cpp)."""
    if not isinstance(name, str):
        return [f"name {name!r} is not text"]
    problems = []
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        problems.append(f"name {name!r} is not [A-Za-z0-9_]+")
    if name.startswith(_RESERVED_PREFIXES):
        problems.append(f"name {name!r} starts with a prefix osquery reserves")
    if name.endswith(_RESERVED_SUFFIXES):
        problems.append(f"name {name!r} ends in epoch/counter, which osquery reserves")
    return problems


def sql_problems(sql: object) -> list[str]:
    """Problems of a tracked_connections query: SQLite parse, stable columns, key columns."""
    if not isinstance(sql, str) or not sql.strip():
        return ["query is empty"]
    db = _contract_db()
    try:
        cursor = db.execute(sql)
    except sqlite3.Error as err:
        return [f"query does not run against the column contract: {err}"]
    columns = [d[0] for d in cursor.description or ()]
    problems = []
    if not columns:
        problems.append("query selects no columns")
    unstable = [c for c in columns if c not in STABLE_COLUMNS]
    if unstable:
        problems.append(f"selects columns that change during a connection: {unstable}")
    for key in ("pid", "remote_address"):
        if key not in columns:
            problems.append(f"does not select {key}")
    return problems


def fleet_query_problems(spec: Mapping[str, Any]) -> list[str]:
    """Problems of a scheduled Fleet report/query spec (kind: report|query or GitOps item)."""
    problems = name_problems(spec.get("name")) + sql_problems(spec.get("query"))
    expected: dict[str, object] = {
        "interval": 2,
        "logging": "differential",
        "automations_enabled": True,
    }
    for key, value in expected.items():
        if spec.get(key) != value:
            problems.append(f"{key} is {spec.get(key)!r}, expected {value!r}")
    for key in ("discard_data", "observer_can_run"):
        if not isinstance(spec.get(key), bool):
            problems.append(f"{key} must be set to true or false")
    platforms = str(spec.get("platform", "")).split(",")
    if not spec.get("platform") or any(p not in _PLATFORMS for p in platforms):
        problems.append(f"platform {spec.get('platform')!r} is not a list of Fleet platforms")
    if not _VERSION.fullmatch(str(spec.get("min_osquery_version", ""))):
        problems.append("min_osquery_version must look like 5.0.0")
    if isinstance(spec.get("query"), str) and _normalise_sql(spec["query"]) != _main_pack_sql():
        problems.append("query differs from packs/tracked_connections.conf")
    return problems


def osquery_query_problems(name: str, query: Mapping[str, Any]) -> list[str]:
    """Problems of one query of an osquery JSON pack (or a Fleet kind: pack entry)."""
    problems = name_problems(name) + sql_problems(query.get("query"))
    if query.get("interval") != 2:
        problems.append(f"interval is {query.get('interval')!r}, expected 2")
    if query.get("snapshot", False) is not False:
        problems.append("snapshot must be false (differential)")
    if query.get("removed", True) is not True:
        problems.append("removed must be true (log removals)")
    return problems


@dataclass(frozen=True)
class FleetDoc:
    """One YAML document of a ``fleetctl apply`` file."""

    path: Path
    index: int
    kind: str
    spec: Mapping[str, Any]


def _load_docs(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def fleet_docs(path: Path) -> Iterator[FleetDoc]:
    for i, doc in enumerate(_load_docs(path)):
        assert isinstance(doc, dict), f"{path.name}[{i}] is not a mapping"
        assert doc.get("apiVersion") == "v1", f"{path.name}[{i}]: apiVersion must be v1"
        assert doc.get("kind") in _FLEET_KINDS, f"{path.name}[{i}]: kind {doc.get('kind')!r}"
        assert isinstance(doc.get("spec"), dict), f"{path.name}[{i}]: spec must be a mapping"
        yield FleetDoc(path, i, doc["kind"], doc["spec"])


def pack_problems(docs: list[FleetDoc]) -> list[str]:
    """Problems of a legacy ``kind: pack`` file: entries, saved queries, label targets."""
    saved = {d.spec.get("name"): d.spec for d in docs if d.kind in ("query", "report")}
    labels = {d.spec.get("name"): d.spec for d in docs if d.kind == "label"}
    problems: list[str] = []
    for doc in (d for d in docs if d.kind == "pack"):
        for label in doc.spec.get("targets", {}).get("labels", []):
            if label not in labels:
                problems.append(f"pack targets label {label!r}, not defined in the file")
        entries = doc.spec.get("queries") or []
        if not entries:
            problems.append("pack has no queries")
        for entry in entries:
            target = saved.get(entry.get("query"))
            if target is None:
                problems.append(f"pack entry references unknown query {entry.get('query')!r}")
                continue
            if target.get("interval", 0) != 0:
                problems.append("the saved query a pack runs must have interval 0")
            merged = {**entry, "query": target.get("query")}
            problems += osquery_query_problems(str(entry.get("name")), merged)
            if _normalise_sql(str(target.get("query"))) != _main_pack_sql():
                problems.append("pack query differs from packs/tracked_connections.conf")
    return problems


# -- osquery JSON packs -------------------------------------------------------------


@pytest.mark.parametrize("pack_path", _packs(), ids=lambda p: p.name)
def test_pack_queries(pack_path: Path) -> None:
    pack: dict[str, Any] = json.loads(pack_path.read_text(encoding="utf-8"))
    assert pack["queries"], "a pack needs queries"
    db = _contract_db()
    assert pack.get("discovery"), "the pack needs a discovery query (hosts without the table)"
    for sql in pack["discovery"]:
        db.execute(sql)
    for name, query in pack["queries"].items():
        assert osquery_query_problems(name, query) == []


def test_the_main_pack_exists() -> None:
    assert PACKS / "tracked_connections.conf" in _packs()


def test_discovery_returns_rows_only_when_the_table_is_registered() -> None:
    pack = json.loads((PACKS / "tracked_connections.conf").read_text(encoding="utf-8"))
    db = _contract_db()
    [discovery] = pack["discovery"]
    assert db.execute(discovery).fetchall() == []
    db.execute("INSERT INTO osquery_registry VALUES ('table', 'processes', 1)")
    assert db.execute(discovery).fetchall() == []
    db.execute("INSERT INTO osquery_registry VALUES ('table', 'tracked_connections', 1)")
    assert db.execute(discovery).fetchall() == [(1,)]


# -- Fleet apply documents ---------------------------------------------------------


def test_fleet_files_exist() -> None:
    names = {p.name for p in _fleet_files()}
    assert names == {
        "tracked_connections.label.yml",
        "tracked_connections.report.yml",
        "tracked_connections.report.label-scoped.yml",
        "tracked_connections.query.yml",
        "tracked_connections.query.label-scoped.yml",
        "tracked_connections.pack.yml",
    }


REPORT_FORMS = [
    ("tracked_connections.report.yml", "report"),
    ("tracked_connections.report.label-scoped.yml", "report"),
    ("tracked_connections.query.yml", "query"),
    ("tracked_connections.query.label-scoped.yml", "query"),
]


@pytest.mark.parametrize(("file_name", "kind"), REPORT_FORMS)
def test_fleet_report_and_query_forms(file_name: str, kind: str) -> None:
    [doc] = list(fleet_docs(FLEET / file_name))
    assert doc.kind == kind
    assert fleet_query_problems(doc.spec) == []


def test_report_and_query_forms_differ_only_in_kind_and_scope() -> None:
    [report] = list(fleet_docs(FLEET / "tracked_connections.report.yml"))
    [label] = list(fleet_docs(FLEET / "tracked_connections.label.yml"))
    for file_name, _ in REPORT_FORMS:
        [doc] = list(fleet_docs(FLEET / file_name))
        spec = dict(doc.spec)
        scope = spec.pop("labels_include_any", None)
        assert spec == report.spec, file_name
        assert scope in (None, [label.spec["name"]]), file_name


def test_the_label_matches_hosts_with_the_table() -> None:
    [label] = list(fleet_docs(FLEET / "tracked_connections.label.yml"))
    assert label.kind == "label"
    assert sql_problems_for_label(label.spec["query"]) == []


def test_legacy_pack_form() -> None:
    docs = list(fleet_docs(FLEET / "tracked_connections.pack.yml"))
    assert [d.kind for d in docs] == ["label", "query", "pack"]
    assert pack_problems(docs) == []
    label = docs[0].spec
    assert sql_problems_for_label(label["query"]) == []


def sql_problems_for_label(sql: str) -> list[str]:
    db = _contract_db()
    try:
        rows_without = db.execute(sql).fetchall()
        db.execute("INSERT INTO osquery_registry VALUES ('table', 'tracked_connections', 1)")
        rows_with = db.execute(sql).fetchall()
    except sqlite3.Error as err:
        return [str(err)]
    if rows_without or not rows_with:
        return ["label must match exactly the hosts with the table registered"]
    return []


@pytest.mark.parametrize("path", _fleet_files(), ids=lambda p: p.name)
def test_every_fleet_document_has_a_known_kind(path: Path) -> None:
    docs = list(fleet_docs(path))
    assert docs


# -- GitOps --------------------------------------------------------------------------


def _gitops_entries(path: Path) -> list[tuple[str, Mapping[str, Any]]]:
    """(``reports``|``queries``, item) for every item of a default.yml excerpt."""
    [doc] = _load_docs(path)
    assert isinstance(doc, dict)
    keys = [k for k in ("reports", "queries") if k in doc]
    assert len(keys) == 1, f"{path.name}: exactly one of reports:/queries: (both is an error)"
    return [(keys[0], item) for item in doc[keys[0]]]


def _resolve_gitops_items(path: Path) -> list[Mapping[str, Any]]:
    items: list[Mapping[str, Any]] = []
    for _, entry in _gitops_entries(path):
        if "path" in entry:
            target = (path.parent / entry["path"]).resolve()
            assert target.is_file(), f"{path.name}: {entry['path']} does not exist"
            assert target.name.endswith(".reports.yml")
            [listing] = _load_docs(target)
            assert isinstance(listing, list)
            items.extend(listing)
        else:
            items.append(entry)
    return items


def test_gitops_files_exist() -> None:
    assert {p.name for p in _gitops_files()} == {"default.yml", "default.pre-4.82.yml"}
    assert (GITOPS / "lib" / "tracked-connections.reports.yml").is_file()
    assert (GITOPS / "lib" / "tracked-connections.label-scoped.reports.yml").is_file()


def test_gitops_current_and_older_keys() -> None:
    assert {k for k, _ in _gitops_entries(GITOPS / "default.yml")} == {"reports"}
    assert {k for k, _ in _gitops_entries(GITOPS / "default.pre-4.82.yml")} == {"queries"}


@pytest.mark.parametrize("path", _gitops_files(), ids=lambda p: p.name)
def test_gitops_items(path: Path) -> None:
    items = _resolve_gitops_items(path)
    assert [i.get("name") for i in items] == ["tracked_connections"]
    for item in items:
        assert "team" not in item and "team_id" not in item, "GitOps forbids team ids"
        assert fleet_query_problems(item) == []


def test_gitops_item_matches_the_apply_form() -> None:
    [item] = _resolve_gitops_items(GITOPS / "default.yml")
    [report] = list(fleet_docs(FLEET / "tracked_connections.report.yml"))
    assert dict(item) == dict(report.spec)


# -- the lint catches what it should ------------------------------------------------


def _good_spec() -> dict[str, Any]:
    [report] = list(fleet_docs(FLEET / "tracked_connections.report.yml"))
    return copy.deepcopy(dict(report.spec))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"interval": 60}, "interval"),
        ({"interval": "2"}, "interval"),
        ({"logging": "snapshot"}, "logging"),
        ({"logging": "differential_ignore_removals"}, "logging"),
        ({"automations_enabled": False}, "automations_enabled"),
        ({"discard_data": None}, "discard_data"),
        ({"observer_can_run": "no"}, "observer_can_run"),
        ({"platform": "linux,beos"}, "platform"),
        ({"min_osquery_version": "latest"}, "min_osquery_version"),
        ({"name": "query.tracked"}, "prefix"),
        ({"name": "cache.tracked"}, "prefix"),
        ({"name": "config_views.tracked"}, "prefix"),
        ({"name": "tracked_counter"}, "epoch/counter"),
        ({"name": "tracked_epoch"}, "epoch/counter"),
        ({"query": "SELECT pid, remote_address, state FROM tracked_connections"}, "change"),
        ({"query": "SELECT pid, remote_address, last_seen FROM tracked_connections"}, "change"),
        ({"query": "SELECT pid, remote_adress FROM tracked_connections"}, "column contract"),
        ({"query": "SELECT pid FROM tracked_connections"}, "remote_address"),
        ({"query": "SELECT pid, remote_address FROM tracked_connections"}, "differs"),
    ],
)
def test_lint_rejects(change: dict[str, Any], needle: str) -> None:
    spec = {**_good_spec(), **change}
    problems = fleet_query_problems(spec)
    assert any(needle in p for p in problems), problems


def test_lint_rejects_a_pack_that_would_log_twice_or_target_nothing() -> None:
    docs = list(fleet_docs(FLEET / "tracked_connections.pack.yml"))
    label, saved, pack = docs
    scheduled = FleetDoc(saved.path, 1, "query", {**saved.spec, "interval": 3600})
    assert "the saved query a pack runs must have interval 0" in pack_problems(
        [label, scheduled, pack]
    )
    assert any("targets label" in p for p in pack_problems([saved, pack]))
    entry = {**pack.spec["queries"][0], "removed": False}
    bad_pack = FleetDoc(pack.path, 2, "pack", {**pack.spec, "queries": [entry]})
    assert "removed must be true (log removals)" in pack_problems([label, saved, bad_pack])
