"""The ExtensionManager service over a real UNIX socket, with a raw Thrift client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from osquery.extension_client import ExtensionClient
from osquery.extensions.ttypes import InternalExtensionInfo

from osqueryd_standin import Standin

ROUTES = [{"id": "column", "name": "a", "type": "TEXT", "op": "0"}]


def info(name: str, sdk: str = "3.0.7") -> Any:
    return InternalExtensionInfo(name=name, version="1.0", sdk_version=sdk, min_sdk_version="1.8.0")


@pytest.fixture
def manager(make_standin: Callable[..., Standin]) -> Iterator[tuple[Standin, Any]]:
    osqd = make_standin(extensions_timeout_secs=0.2)
    client = ExtensionClient(path=osqd.socket_path)
    assert client.open(timeout=2)
    yield osqd, client.extension_manager_client()
    client.close()


def test_ping(manager: tuple[Standin, Any]) -> None:
    _, em = manager
    status = em.ping()
    assert (status.code, status.message, status.uuid) == (0, "pong", 0)


def test_register_and_deregister(manager: tuple[Standin, Any]) -> None:
    osqd, em = manager
    status = em.registerExtension(info("raw"), {"table": {"raw_t": ROUTES}})
    assert (status.code, status.message) == (0, "OK")
    uuid = status.uuid
    assert 1 <= uuid <= 65535
    assert em.extensions()[uuid].name == "raw"
    rows = osqd.query("SELECT name, owner_uuid, internal FROM osquery_registry WHERE internal = 0")
    assert rows == [{"name": "raw_t", "owner_uuid": str(uuid), "internal": "0"}]
    ok = em.deregisterExtension(uuid)
    assert ok.code == 0
    again = em.deregisterExtension(uuid)
    assert (again.code, again.message) == (1, "No extension UUID found")
    assert osqd.query("SELECT name FROM osquery_registry WHERE name = 'raw_t'") == []


@pytest.mark.parametrize(
    ("ext_name", "sdk", "registry", "message"),
    [
        ("raw", "3.0.7", {"table": {"other": ROUTES}}, "Duplicate extension registered"),
        ("old", "1.7.6", {"table": {"old_t": ROUTES}}, "Incompatible extension SDK version"),
        ("empty", "3.0.7", {"table": {"e_t": []}}, "Failed adding registry: Invalid route info"),
        (
            "clash",
            "3.0.7",
            {"table": {"raw_t": ROUTES}},
            "Failed adding registry: Registry item raw_t conflicts with another item of the "
            "same name.",
        ),
        (
            "clash2",
            "3.0.7",
            {"table": {"osquery_registry": ROUTES}},
            "Failed adding registry: Registry item osquery_registry conflicts with another "
            "item of the same name.",
        ),
        (
            "odd",
            "3.0.7",
            {"bogus": {"x": ROUTES}},
            "Failed adding registry: Unknown registry: bogus",
        ),
    ],
)
def test_registration_errors(
    manager: tuple[Standin, Any], ext_name: str, sdk: str, registry: Any, message: str
) -> None:
    _, em = manager
    assert em.registerExtension(info("raw"), {"table": {"raw_t": ROUTES}}).code == 0
    status = em.registerExtension(info(ext_name, sdk), registry)
    assert (status.code, status.message) == (1, message)
    assert sorted(e.name for e in em.extensions().values()) == ["raw"]


def test_query_and_columns_over_thrift(manager: tuple[Standin, Any]) -> None:
    _, em = manager
    bad = em.query("SELECT * FROM nosuch")
    assert (bad.status.code, bad.status.message, bad.response) == (1, "no such table: nosuch", [])
    good = em.query("SELECT 1 AS one, 2.5 AS half, NULL AS nul, 'x' AS s")
    assert good.status.code == 0
    assert good.response == [{"one": "1", "half": "2.5", "nul": "", "s": "x"}]
    cols = em.getQueryColumns("SELECT registry, owner_uuid, 1 + 1 FROM osquery_registry")
    assert cols.status.code == 0
    assert cols.response == [{"registry": "TEXT"}, {"owner_uuid": "INTEGER"}, {"1 + 1": "UNKNOWN"}]
    options = em.options()
    assert options["logger_event_type"].value == "true"
    assert options["extensions_socket"].type == "string"


def test_stale_sockets_removed(workdir: Path, make_standin: Callable[..., Standin]) -> None:
    stale = workdir / "osquery.em.4242"
    stale.write_text("")
    make_standin()
    assert not stale.exists()
    assert (workdir / "osquery.em").is_socket()


def test_unreachable_extension_is_dropped(
    manager: tuple[Standin, Any], caplog: pytest.LogCaptureFixture
) -> None:
    osqd, em = manager
    uuid = em.registerExtension(info("ghost"), {"table": {"ghost_t": ROUTES}}).uuid
    with caplog.at_level(logging.INFO, logger="osqueryd_standin"):
        dropped = osqd.check_extensions_now()
    assert uuid in dropped
    assert f"Extension UUID {uuid} has gone away" in caplog.text
    assert "ghost_t" not in osqd.registry.external_tables()
