"""Queries of every shape through the osqueryd stand-in and the extension: a query
that reads ``state`` or ``last_seen`` anywhere (select list, WHERE, ORDER BY, a
join, a subquery) gets them; one that reads neither gets the same rows."""

from __future__ import annotations

import socket
import time

from tests.helpers.osqueryd import short_tmpdir, standin_with_extension
from tests.helpers.sockets import own_net_namespace


def test_every_query_shape_sees_the_columns_it_reads() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    ns = own_net_namespace()
    mine = f"net_namespace = {ns} AND remote_port = {port}"  # the client's row
    with (
        server,
        client,
        accepted,
        short_tmpdir() as workdir,
        standin_with_extension(workdir, "--sample-interval-ms", "100") as osqd,
    ):
        deadline = time.monotonic() + 20
        while not osqd.query(f"SELECT pid FROM tracked_connections WHERE {mine}"):
            assert time.monotonic() < deadline, "the client's row never came"
            time.sleep(0.2)

        (row,) = osqd.query(f"SELECT local_port, direction FROM tracked_connections WHERE {mine}")
        assert row == {"local_port": str(client.getsockname()[1]), "direction": "outbound"}
        assert osqd.query(f"SELECT count(*) AS n FROM tracked_connections WHERE {mine}") == [
            {"n": "1"}
        ]
        (full,) = osqd.query(f"SELECT * FROM tracked_connections WHERE {mine}")
        assert full["state"] == "ESTABLISHED" and int(full["last_seen"]) > 0
        (tail,) = osqd.query(f"SELECT state, last_seen FROM tracked_connections WHERE {mine}")
        assert tail == {"state": "ESTABLISHED", "last_seen": tail["last_seen"]}
        assert int(tail["last_seen"]) >= int(full["last_seen"])
        # state only in WHERE, last_seen only in ORDER BY: still read.
        assert osqd.query(
            f"SELECT local_port FROM tracked_connections WHERE {mine} AND state = 'ESTABLISHED'"
        ) == [{"local_port": row["local_port"]}]
        assert (
            osqd.query(
                f"SELECT local_port FROM tracked_connections WHERE {mine} AND last_seen IS NULL"
            )
            == []
        )
        assert osqd.query(
            f"SELECT local_port FROM tracked_connections WHERE {mine} ORDER BY last_seen"
        ) == [{"local_port": row["local_port"]}]
        # A join of the table with itself, one side reading state; a subquery.
        joined = osqd.query(
            "SELECT c.local_port AS port, s.state AS peer_state FROM tracked_connections c "
            "JOIN tracked_connections s ON s.local_port = c.remote_port "
            f"AND s.remote_port = c.local_port WHERE c.net_namespace = {ns} "
            f"AND c.remote_port = {port}"
        )
        assert joined == [{"port": row["local_port"], "peer_state": "ESTABLISHED"}]
        assert osqd.query(
            f"SELECT local_port FROM tracked_connections WHERE {mine} AND EXISTS "
            "(SELECT 1 FROM tracked_connections t WHERE t.state = 'LISTEN' "
            f"AND t.local_port = {port})"
        ) == [{"local_port": row["local_port"]}]
