"""Short-lived connections and reused local ports, with real sockets."""

from __future__ import annotations

import socket

from extension.collect import select_collector
from extension.sampler import Sampler
from extension.serve.table import TrackedConnectionsTable
from tests.helpers.sockets import close_with_reset


def _rows(sampler: Sampler, local_port: int, remote_port: int) -> list[dict[str, str]]:
    rows = TrackedConnectionsTable(sampler).generate({})
    return [
        r for r in rows
        if r.get("local_port") == str(local_port) and r.get("remote_port") == str(remote_port)
    ]  # fmt: skip


def test_connection_seen_by_one_sample_stays_until_linger_ends() -> None:
    now = [1_000_000.0]
    sampler = Sampler(select_collector(), linger_secs=6, clock=lambda: now[0])
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        local_port = client.getsockname()[1]
        accepted, _ = server.accept()
        sampler.sample_once()  # the only sample that sees it open
        close_with_reset([client])
        accepted.close()
    now[0] += 0.25
    sampler.sample_once()
    (row,) = _rows(sampler, local_port, port)
    assert row["first_seen"] == "1000000"
    now[0] += 5.0
    sampler.sample_once()
    assert len(_rows(sampler, local_port, port)) == 1, "still lingering at 5.25 s"
    now[0] += 1.5
    sampler.sample_once()
    assert _rows(sampler, local_port, port) == [], "gone after linger_secs"


def test_reused_local_port_to_the_same_remote_is_two_rows() -> None:
    sampler = Sampler(select_collector(), linger_secs=30)
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        first = socket.socket()
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        first.bind(("127.0.0.1", 0))
        local_port = first.getsockname()[1]
        first.connect(("127.0.0.1", port))
        accepted1, _ = server.accept()
        sampler.sample_once()
        close_with_reset([first])
        accepted1.close()
        sampler.sample_once()

        second = socket.socket()
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        second.bind(("127.0.0.1", local_port))
        second.connect(("127.0.0.1", port))
        accepted2, _ = server.accept()
        try:
            sampler.sample_once()
            rows = _rows(sampler, local_port, port)
        finally:
            close_with_reset([second])
            accepted2.close()
    assert len(rows) == 2
    assert len({r["socket"] for r in rows}) == 2
    assert sampler.stats().connections_lingering >= 1
