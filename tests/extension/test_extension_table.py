"""The table built in-process from live sockets the test opens."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from extension.collect import CollectError, PsutilCollector, normalize_address
from extension.columns import (
    COLUMN_NAMES,
    COLUMN_TYPES,
    COLUMNS,
    STABLE_COLUMNS,
    markdown_reference,
)
from extension.model import SocketRecord
from extension.sampler import Sampler
from extension.serve.table import StatsTable, TrackedConnectionsTable


def _generate(sampler: Sampler | None = None) -> list[dict[str, str]]:
    sampler = sampler or Sampler(PsutilCollector())
    sampler.sample_once()
    return TrackedConnectionsTable(sampler).generate({})


def routes() -> list[dict[str, str]]:
    return TrackedConnectionsTable(Sampler(PsutilCollector())).routes()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    yield listener, client, accepted
    for s in (client, accepted, listener):
        s.close()


def _rows_for_port(rows: list[dict[str, str]], port: int) -> list[dict[str, str]]:
    wanted = str(port)
    return [r for r in rows if wanted in (r.get("local_port"), r.get("remote_port"))]


def test_routes_follow_the_column_contract() -> None:
    assert [r["name"] for r in routes()] == list(COLUMN_NAMES)
    assert all(r["id"] == "column" and r["op"] == "0" for r in routes())
    assert {r["name"]: r["type"] for r in routes()} == COLUMN_TYPES
    assert "state" not in STABLE_COLUMNS and "last_seen" not in STABLE_COLUMNS
    assert len(COLUMNS) == 27


def _own_tcp_rows(
    rows: list[dict[str, str]], sockets: tuple[socket.socket, ...]
) -> list[dict[str, str]]:
    """Rows whose exact endpoints are one of ``sockets``' (psutil gives no inode): on a
    busy host other rows share the port numbers (another process's closed connection)."""
    ends = set()
    for sock in sockets:
        try:
            remote = sock.getpeername()
        except OSError:
            remote = ("", 0)
        ends.add((*sock.getsockname()[:2], *remote[:2]))
    return [
        r
        for r in rows
        if r.get("protocol") == "6"
        and (
            r.get("local_address"),
            int(r.get("local_port", -1)),
            r.get("remote_address", ""),
            int(r.get("remote_port", 0)),
        )
        in ends
    ]


def test_own_connection_has_our_pid_name_and_direction(
    tcp_pair: tuple[socket.socket, socket.socket, socket.socket],
) -> None:
    listener, client, _accepted = tcp_pair
    port = listener.getsockname()[1]
    client_port = client.getsockname()[1]
    rows = _own_tcp_rows(_generate(), tcp_pair)
    assert len(rows) == 3
    by_direction = {r["direction"]: r for r in rows}
    assert set(by_direction) == {"listening", "inbound", "outbound"}
    me = psutil.Process()
    for row in rows:
        assert row["pid"] == str(os.getpid())
        assert row["name"] == me.name()
        assert row["path"] == me.exe()
        assert row["family"] == "2" and row["protocol"] == "6"
        assert row["start_time"] == str(int(me.create_time()))
        assert all(isinstance(v, str) and v != "None" for v in row.values())
        assert set(row) <= set(COLUMN_NAMES)
    out = by_direction["outbound"]
    assert (out["local_port"], out["remote_address"], out["remote_port"]) == (
        str(client_port),
        "127.0.0.1",
        str(port),
    )
    assert out["state"] == "ESTABLISHED"
    assert out["community_id"].startswith("1:")
    assert out["community_id"] == by_direction["inbound"]["community_id"]
    assert by_direction["listening"]["remote_address"] == ""
    assert by_direction["listening"]["remote_port"] == "0"
    assert "community_id" not in by_direction["listening"]


def test_first_seen_is_kept_across_samples(
    tcp_pair: tuple[socket.socket, socket.socket, socket.socket],
) -> None:
    now = [1_000_000.0]
    sampler = Sampler(PsutilCollector(), clock=lambda: now[0])
    first = _own_tcp_rows(_generate(sampler), tcp_pair)
    now[0] += 5
    second = _own_tcp_rows(_generate(sampler), tcp_pair)
    assert len(first) == len(second) == 3
    assert {r["first_seen"] for r in first + second} == {"1000000"}
    assert {r["last_seen"] for r in second} == {"1000005"}


def test_udp_socket_is_listed() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
        udp.bind(("::1", 0))
        port = udp.getsockname()[1]
        rows = [r for r in _rows_for_port(_generate(), port) if r["protocol"] == "17"]
    assert len(rows) == 1
    assert rows[0]["family"] == "10" and rows[0]["protocol"] == "17"
    assert rows[0]["local_address"] == "::1"
    assert rows[0]["state"] == "" and rows[0]["direction"] == "listening"


@pytest.mark.parametrize(
    ("family", "address", "expected"),
    [
        (10, "::ffff:10.1.2.3", (2, "10.1.2.3")),
        (10, "::FFFF:127.0.0.1", (2, "127.0.0.1")),
        (10, "::", (10, "::")),
        (2, "0.0.0.0", (2, "0.0.0.0")),
        (10, "", (10, "")),
        (10, "fe80::1", (10, "fe80::1")),
    ],
)
def test_normalize_address(family: int, address: str, expected: tuple[int, str]) -> None:
    assert normalize_address(family, address) == expected


class _FailingCollector:
    def collect(self) -> list[SocketRecord]:
        raise CollectError("no /proc")


def test_collect_failure_raises_instead_of_empty_table() -> None:
    sampler = Sampler(_FailingCollector())
    with pytest.raises(CollectError, match="no /proc"):
        TrackedConnectionsTable(sampler).generate({})
    stats = StatsTable(sampler).generate({})[0]
    assert stats["sample_errors"] == "1"
    assert stats["last_error"] == "no /proc"
    assert stats["samples_taken"] == "0"


def test_docs_column_reference_is_current() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "columns.md"
    assert doc.read_text(encoding="utf-8") == markdown_reference(), (
        "docs/columns.md is stale: run `python -m extension.columns > docs/columns.md`"
    )


@pytest.mark.parametrize(
    ("context", "stable_only"),
    [
        ({"colsUsed": ["pid", "remote_address"]}, True),
        ({"colsUsed": []}, True),  # count(*): osquery sends an empty list
        ({"colsUsed": ["pid", "state"]}, False),
        ({"colsUsed": ["last_seen"]}, False),
        ({}, False),  # an osquery that sends no colsUsed
        ({"colsUsed": None}, False),
        ({"colsUsed": "pid"}, False),
        ({"colsUsed": ["pid", 3]}, False),
        ({"colsUsed": {"pid": 1}}, False),
    ],
)
def test_only_a_query_known_to_read_no_changing_column_gets_stable_columns_alone(
    tcp_pair: tuple[socket.socket, socket.socket, socket.socket],
    context: dict[str, object],
    stable_only: bool,
) -> None:
    sampler = Sampler(PsutilCollector())
    sampler.sample_once()
    rows = list(TrackedConnectionsTable(sampler).generate(context))
    mine = _rows_for_port(rows, tcp_pair[0].getsockname()[1])
    assert mine and all(set(row) <= set(COLUMN_NAMES) for row in mine)
    if stable_only:
        assert all(set(row) <= STABLE_COLUMNS for row in mine)
    else:
        assert all(row["state"] and int(row["last_seen"]) > 0 for row in mine)
