"""Operator commands on the PostgreSQL state (``state.backend: postgresql``).

The same commands as ``test_operate_commands.py`` (status, outbox list/show/retry/
purge, silence add/list/expire), against a running ``run`` whose state is a schema of
the real PostgreSQL server on 127.0.0.1 and a real receiver: the commands read and
change the shared state, not a ``state.sqlite3`` that a cluster never writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alert_service.state.db import open_state
from alert_service.state.leases import PgLeases
from alert_service.state.postgres import PgConnection, PgTarget
from tests.helpers.alert_ops import (
    append_lines,
    cli,
    cli_json,
    receiver,
    result_line,
    service,
    write_config,
)
from tests.helpers.console_client import ConsoleClient
from tests.helpers.pgstate import pg_target

__all__ = ["pg_target"]  # the fixture, used by name

N_ALERTS = 5


def _config(tmp: Path, url: str, target: PgTarget, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TC_STATE_DSN", target.dsn)
    state = (
        f"state:\n  backend: postgresql\n  dsn: {{env: TC_STATE_DSN}}\n  schema: {target.schema}\n"
    )
    return write_config(tmp, url, extra=state)


def test_dead_letters_listed_shown_retried_and_purged(
    tmp_path: Path, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver() as rx:
        config = _config(tmp_path, rx.base + "/hoook", pg_target, monkeypatch)
        c = ("--config", str(config))
        append_lines(tmp_path / "results.log", [result_line(n) for n in range(N_ALERTS)])
        with service(config, tmp_path / "run1.log") as svc:
            svc.wait_event("notify_dead_lettered", N_ALERTS)
            dead = cli_json("outbox", "list", "--state", "dead", *c)
            status = cli_json("status", *c)
            text = cli("status", *c)
        assert not (tmp_path / "state" / "state.sqlite3").exists()
        assert len(dead) == N_ALERTS
        assert rx.count(404) == N_ALERTS
        hook = status["destinations"]["hook"]
        assert (hook["dead"], hook["sent"], hook["pending"]) == (N_ALERTS, 0, 0)
        assert "HTTP 404" in hook["last_error"]
        assert status["state"].startswith(f"postgresql schema {pg_target.schema}")
        assert pg_target.dsn not in status["state"]
        assert status["sources"][0]["lag_bytes"] == 0
        assert isinstance(status["leases"], list)
        assert text.returncode == 0, text.stderr
        assert f"hook: pending 0 sent 0 dead {N_ALERTS}" in text.stdout

        shown = cli_json("outbox", "show", str(dead[0]["id"]), *c)
        assert (shown["alert_id"], shown["state"]) == (dead[0]["alert_id"], "dead")
        assert shown["alert"]["connection"]["remote_port"] == 4444

        config = _config(tmp_path, rx.url, pg_target, monkeypatch)  # the fix
        with service(config, tmp_path / "run2.log") as svc:
            done = cli("outbox", "retry", "--dead", *c)
            assert done.returncode == 0, done.stderr
            assert f"queued again: {N_ALERTS}" in done.stdout
            svc.wait_event("notify_sent", N_ALERTS)
        assert rx.accepted_ids() == {row["alert_id"]: 1 for row in dead}
        assert cli_json("outbox", "retry", "--dead", *c) == {"retried": []}
        assert cli_json("outbox", "purge", "--sent-before", "1h", *c)["deleted"] == 0
        assert cli_json("outbox", "purge", "--sent-before", "2999-01-01", *c)["deleted"] == (
            N_ALERTS
        )
        assert cli_json("outbox", "list", *c) == []


def test_status_names_the_live_instances_not_a_local_pid(
    tmp_path: Path, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cluster instances take no lock file (they share the state by design), so the
    # state directory's pid says nothing about them: "run:" comes from the live
    # memberships, as each instance's heartbeat writes them.
    config = _config(tmp_path, "http://127.0.0.1:9/hook", pg_target, monkeypatch)
    c = ("--config", str(config))
    open_state(pg_target).close()  # as the cluster's first run does
    text = cli("status", *c)
    assert text.returncode == 0, text.stderr
    assert "run: no live cluster member" in text.stdout
    assert cli_json("status", *c)["instances"] == []
    conn = open_state(pg_target)
    assert isinstance(conn, PgConnection)
    try:
        PgLeases(conn, "host-a-101-x", 60).heartbeat()
        PgLeases(conn, "host-b-202-y", 60).heartbeat()
        gone = PgLeases(conn, "host-c-303-z", 60)
        gone.heartbeat()
        gone.leave()  # a clean stop ends its membership
    finally:
        conn.close()
    text = cli("status", *c)
    assert text.returncode == 0, text.stderr
    assert "run: 2 live instances: host-a-101-x, host-b-202-y\n" in text.stdout
    assert "not running" not in text.stdout
    assert cli_json("status", *c)["instances"] == ["host-a-101-x", "host-b-202-y"]


def test_silences_are_stored_in_the_shared_state(
    tmp_path: Path, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver() as rx:
        config = _config(tmp_path, rx.url, pg_target, monkeypatch)
        c = ("--config", str(config))
        open_state(pg_target).close()  # as the cluster's first run does
        first = cli_json("silence", "add", "--for", "2h", "--host", "web-09", "--comment", "a", *c)
        added = cli_json(
            "silence", "add", "--for", "2h", "--host", "web-02", "--remote", "198.51.100.0/24",
            "--comment", "maintenance, ops-7", *c,
        )  # fmt: skip
        assert added["id"] == first["id"] + 1  # the id the row got, not 0
        assert added["ends_at"] - added["created_at"] == 7200
        conn = open_state(pg_target)  # what any instance of the cluster reads
        stored = conn.execute("SELECT id, host, remote FROM operator_silences ORDER BY id")
        assert stored.fetchall() == [
            (first["id"], "web-09", None),
            (added["id"], "web-02", "198.51.100.0/24"),
        ]
        conn.close()
        log = tmp_path / "results.log"
        with service(config, tmp_path / "run.log") as svc:
            append_lines(log, [result_line(1, host="web-01"), result_line(2, host="web-02")])
            svc.wait_event("notify_silenced")
            svc.wait_event("notify_sent")
            silenced = cli_json("outbox", "list", "--state", "silenced", *c)
            assert [r["host"] for r in silenced] == ["web-02"]
            assert silenced[0]["last_error"] == f"silence {added['id']}: maintenance, ops-7"
            listed = [s["id"] for s in cli_json("silence", "list", *c)]
            assert listed == [added["id"], first["id"]]
            done = cli("silence", "expire", str(added["id"]), *c)
            assert done.returncode == 0, done.stderr
            assert [s["id"] for s in cli_json("silence", "list", *c)] == [first["id"]]
            assert len(cli_json("silence", "list", "--all", *c)) == 2
            done = cli("outbox", "retry", silenced[0]["alert_id"], *c)
            assert "queued again: 1" in done.stdout, done.stderr
            svc.wait_event("notify_sent", 2)
        hosts = sorted(h.body["host"] for h in rx.hits if h.status == 200)
        assert hosts == ["web-01", "web-02"]
        again = cli("silence", "expire", str(added["id"]), *c)
        assert again.returncode == 1
        assert f"no silence {added['id']} in force" in again.stderr


def test_an_unreachable_server_is_one_line_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = PgTarget("host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2", "x")
    config = _config(tmp_path, "http://127.0.0.1:9/hook", target, monkeypatch)
    for args in (("status",), ("outbox", "list"), ("silence", "add", "--for", "1h",
                 "--rule", "r", "--comment", "x")):  # fmt: skip
        done = cli(*args, "--config", str(config))
        assert done.returncode == 1
        assert "cannot connect to the PostgreSQL state" in done.stderr
        assert "Traceback" not in done.stderr


def test_the_console_reads_and_changes_the_shared_state(
    tmp_path: Path, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiver() as rx:
        config = _config(tmp_path, rx.base + "/hoook", pg_target, monkeypatch)
        with config.open("a", encoding="utf-8") as f:
            f.write("metrics: {listen_address: 127.0.0.1, port: 0}\nconsole: {enabled: true}\n")
        c = ("--config", str(config))
        append_lines(tmp_path / "results.log", [result_line(1)])
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_dead_lettered")
            (listening,) = svc.wait_event("ops_listening")
            base = f"http://127.0.0.1:{listening['port']}"
            client = ConsoleClient(base)
            status = client.request("/console/")
            assert status.status == 200, status.text
            assert f"postgresql schema {pg_target.schema}" in status.text
            assert "run: no live cluster member" in status.text  # a file source: no lease
            (row,) = cli_json("outbox", "list", "--state", "dead", *c)
            dead = client.request("/console/dead")
            assert f'data-id="{row["id"]}"' in dead.text
            csrf = client.request("/console/silences").csrf()
            done = client.request(
                "/console/silences",
                {"duration": "1h", "rule": "r", "comment": "from the console", "csrf": csrf},
                {"Origin": base},
            )
            assert done.status == 303, done.text
            assert [s["comment"] for s in cli_json("silence", "list", *c)] == ["from the console"]
            done = client.request(
                "/console/retry", {"all_dead": "1", "csrf": csrf}, {"Origin": base}
            )
            assert done.headers["Location"] == "/console/dead?done=queued+again%3A+1"
            svc.wait_event("notify_dead_lettered", 2)  # sent again: 404 again
        assert [r["state"] for r in cli_json("outbox", "list", *c)] == ["dead"]
        assert rx.count(404) == 2
