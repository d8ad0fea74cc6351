"""Cluster memberships of instances that are gone are pruned, and ``status`` shows the
live ones, not every instance ever started.

Each start of ``run`` is a new instance name (host, pid, random suffix), so without
pruning the ``leases`` table keeps one ``member:`` row per start forever. Real
PostgreSQL on 127.0.0.1, one ``pgops_*`` schema per test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_service.state.db import open_state
from alert_service.state.leases import MEMBER_PRUNE_AFTER_SECS, PgLeases
from alert_service.state.postgres import PgConnection, PgTarget
from tests.helpers.alert_ops import cli, write_config
from tests.helpers.pgstate import drop_schema
from tests.helpers.services import need_postgresql, unique_name


@pytest.fixture
def conn() -> Iterator[PgConnection]:
    """A connection to a new state schema (dropped afterwards)."""
    target = PgTarget(need_postgresql(), unique_name("pgops"))
    opened = open_state(target)
    assert isinstance(opened, PgConnection)
    opened.target = target  # type: ignore[attr-defined]  # for the tests' config
    try:
        yield opened
    finally:
        opened.close()
        drop_schema(target.dsn, target.schema)


def _expire(conn: PgConnection, owners: list[str], ago_secs: float) -> None:
    """Make every row of ``owners`` (memberships and leases) expired ``ago_secs`` ago."""
    conn.execute(
        "UPDATE leases SET expires_at = EXTRACT(EPOCH FROM clock_timestamp()) - ?"
        f" WHERE owner IN ({','.join('?' * len(owners))})",
        (ago_secs, *owners),
    )


def _names(conn: PgConnection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM leases")}


def test_a_joining_instance_prunes_memberships_expired_longer_than_the_grace(
    conn: PgConnection,
) -> None:
    old = [f"web-01-{1000 + i}-aaaa" for i in range(7)]
    for name in old:
        assert PgLeases(conn, name, 60).heartbeat() >= 1
    assert PgLeases(conn, old[0], 60).acquire("alerts-p1") == 1
    _expire(conn, old[:5], MEMBER_PRUNE_AFTER_SECS + 60)  # long gone (old[0]'s lease too)
    _expire(conn, old[5:], 60)  # stopped a minute ago: still shown as recently expired
    assert PgLeases(conn, "web-01-2000-bbbb", 60).heartbeat() == 1
    assert _names(conn) == {
        f"member:{old[5]}",
        f"member:{old[6]}",
        "member:web-01-2000-bbbb",
        "alerts-p1",  # partition leases stay: their token must keep going up
    }
    assert PgLeases(conn, "web-01-2000-bbbb", 60).acquire("alerts-p1") == 2


def test_renewing_prunes_too_and_keeps_live_members(conn: PgConnection) -> None:
    a = PgLeases(conn, "a", 60)
    b = PgLeases(conn, "b", 60)
    assert (a.heartbeat(), b.heartbeat()) == (1, 2)
    _expire(conn, ["b"], MEMBER_PRUNE_AFTER_SECS + 1)
    assert a.heartbeat() == 1
    assert _names(conn) == {"member:a"}
    assert b.heartbeat() == 2  # an instance that was only stalled comes back
    assert _names(conn) == {"member:a", "member:b"}


def test_status_lists_live_members_and_counts_the_recently_expired(
    conn: PgConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target: PgTarget = conn.target  # type: ignore[attr-defined]
    live = ["web-01-10-live", "web-02-20-live"]
    recent = ["web-01-11-recent", "web-01-12-recent"]
    stopped = "web-03-30-stopped"
    ancient = [f"web-01-{i}-ancient" for i in range(4)]
    for name in [*ancient, *recent, stopped, *live]:
        PgLeases(conn, name, 60).heartbeat()
    PgLeases(conn, stopped, 60).leave()  # a clean stop: counted as recently ended
    _expire(conn, recent, 120)
    _expire(conn, ancient, MEMBER_PRUNE_AFTER_SECS + 120)  # not pruned: no one joined since
    monkeypatch.setenv("TC_STATE_DSN", target.dsn)
    state = (
        f"state:\n  backend: postgresql\n  dsn: {{env: TC_STATE_DSN}}\n  schema: {target.schema}\n"
    )
    config = write_config(tmp_path, "http://127.0.0.1:9/hook", extra=state)
    done = cli("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["instances"] == live
    assert [r["owner"] for r in doc["leases"]] == live
    assert doc["expired_members"] == len(recent) + 1
    text = cli("status", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "run: 2 live instances: web-01-10-live, web-02-20-live\n" in text.stdout
    assert "members ended in the last hour: 3\n" in text.stdout
    assert "ancient" not in text.stdout
    assert "recent" not in text.stdout
