"""Operator commands against a real running service and a real receiver on 127.0.0.1:
status, outbox list/show/retry/purge, silences, test-notifier, and the instance lock."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.alert_ops import (
    append_lines,
    cli,
    cli_json,
    receiver,
    result_line,
    service,
    wait_until,
    write_config,
)

N_ALERTS = 20


def test_every_operator_command_has_help_with_a_description_and_an_example() -> None:
    for args in (
        ["status"],
        ["outbox", "list"],
        ["outbox", "show"],
        ["outbox", "retry"],
        ["outbox", "purge"],
        ["silence", "add"],
        ["silence", "list"],
        ["silence", "expire"],
        ["test-notifier"],
    ):
        done = cli(*args, "--help")
        assert done.returncode == 0, done.stderr
        assert "example:\n  tracked-connections-alerts " + args[0] in done.stdout
        assert "--json" in done.stdout


def test_a_mistyped_url_dead_letters_and_retry_dead_delivers_each_alert_once(
    tmp_path: Path,
) -> None:
    """The 404 case: every alert dead-lettered at once; after the fix, ``outbox retry
    --dead`` sends each exactly once with its original id."""
    with receiver() as rx:
        config = write_config(tmp_path, rx.base + "/hoook")
        log = tmp_path / "results.log"
        append_lines(log, [result_line(n) for n in range(N_ALERTS)])
        with service(config, tmp_path / "run1.log"):
            dead = wait_until(
                lambda: (
                    rows
                    if len(
                        rows := cli_json(
                            "outbox", "list", "--config", str(config), "--state", "dead"
                        )
                    )
                    == N_ALERTS
                    else None
                )
            )
            status = cli_json("status", "--config", str(config))
        assert rx.count(404) == N_ALERTS
        assert rx.count(200) == 0
        hook = status["destinations"]["hook"]
        assert (hook["dead"], hook["sent"], hook["pending"]) == (N_ALERTS, 0, 0)
        assert "HTTP 404" in hook["last_error"]
        assert status["sources"][0]["lag_bytes"] == 0
        assert status["running_pid"] is not None

        write_config(tmp_path, rx.url)  # the fix
        with service(config, tmp_path / "run2.log") as svc:
            done = cli("outbox", "retry", "--dead", "--config", str(config))
            assert done.returncode == 0, done.stderr
            assert f"queued again: {N_ALERTS}" in done.stdout
            svc.wait_event("notify_sent", N_ALERTS)
            status = cli_json("status", "--config", str(config))
        ids = rx.accepted_ids()
        assert ids == {row["alert_id"]: 1 for row in dead}
        assert status["destinations"]["hook"]["sent"] == N_ALERTS
        assert status["destinations"]["hook"]["dead"] == 0
        # A second retry finds nothing to do.
        done = cli("outbox", "retry", "--dead", "--config", str(config), "--json")
        assert json.loads(done.stdout) == {"retried": []}


def test_a_second_run_on_one_state_dir_refuses_and_each_alert_arrives_once(
    tmp_path: Path,
) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        with service(config, tmp_path / "run1.log") as first:
            second = cli("run", "--config", str(config))
            assert second.returncode == 1
            assert f"in use by pid {first.proc.pid}" in second.stderr
            append_lines(tmp_path / "results.log", [result_line(n) for n in range(N_ALERTS)])
            first.wait_event("notify_sent", N_ALERTS)
        assert sorted(rx.accepted_ids().values()) == [1] * N_ALERTS


def test_silences_hold_back_matches_survive_restarts_and_expire(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        c = ("--config", str(config))
        added = cli_json(
            "silence",
            "add",
            "--for",
            "2h",
            "--host",
            "web-02",
            "--remote",
            "198.51.100.0/24",
            "--comment",
            "maintenance, ops-7",
            *c,
        )
        assert (added["host"], added["remote"], added["rule"]) == (
            "web-02",
            "198.51.100.0/24",
            None,
        )
        assert added["ends_at"] - added["created_at"] == 7200
        log = tmp_path / "results.log"
        # The silence was stored before this service started: it survives restarts.
        with service(config, tmp_path / "run1.log") as svc:
            append_lines(log, [result_line(1, host="web-01"), result_line(2, host="web-02")])
            svc.wait_event("notify_silenced")
            svc.wait_event("notify_sent")
            silenced = cli_json("outbox", "list", "--state", "silenced", *c)
            assert [r["host"] for r in silenced] == ["web-02"]
            assert silenced[0]["last_error"] == f"silence {added['id']}: maintenance, ops-7"
            status = cli_json("status", *c)
            assert [s["id"] for s in status["silences"]] == [added["id"]]
            assert status["destinations"]["hook"]["silenced"] == 1
            assert [s["id"] for s in cli_json("silence", "list", *c)] == [added["id"]]

            done = cli("silence", "expire", str(added["id"]), *c)
            assert done.returncode == 0, done.stderr
            assert cli_json("silence", "list", *c) == []
            append_lines(log, [result_line(3, host="web-02")])
            svc.wait_event("notify_sent", 2)
            # The silenced alert can still be sent, with its own id.
            done = cli("outbox", "retry", silenced[0]["alert_id"], *c)
            assert "queued again: 1" in done.stdout, done.stderr
            svc.wait_event("notify_sent", 3)
        hosts = sorted(h.body["host"] for h in rx.hits if h.status == 200)
        assert hosts == ["web-01", "web-02", "web-02"]
        assert rx.accepted_ids()[silenced[0]["alert_id"]] == 1
        again = cli("silence", "expire", str(added["id"]), *c)
        assert again.returncode == 1
        assert f"no silence {added['id']} in force" in again.stderr


def test_silence_add_refuses_without_a_matcher_or_with_a_bad_cidr(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/hook")
    done = cli("silence", "add", "--for", "1h", "--comment", "x", "--config", str(config))
    assert done.returncode == 1
    assert "give at least one of --rule" in done.stderr
    done = cli(
        "silence",
        "add",
        "--for",
        "1h",
        "--remote",
        "10.0.0.0/33",
        "--comment",
        "x",
        "--config",
        str(config),
    )
    assert done.returncode == 1
    assert "10.0.0.0/33" in done.stderr
    done = cli(
        "silence", "add", "--for", "soon", "--rule", "r", "--comment", "x", "--config", str(config)
    )
    assert done.returncode == 1
    assert "not a duration" in done.stderr


def test_outbox_show_renders_the_payload_and_purge_deletes_sent_rows(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        c = ("--config", str(config))
        hostile = "nc <script>alert(1)</script> \x1b[31m\u202e 4444"
        append_lines(tmp_path / "results.log", [result_line(1, cmdline=hostile)])
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_sent")
        (row,) = cli_json("outbox", "list", *c)
        shown = cli_json("outbox", "show", str(row["id"]), *c)
        assert shown["alert_id"] == row["alert_id"]
        assert shown["state"] == "sent"
        assert shown["alert"]["connection"]["cmdline"] == hostile
        # The payload the webhook got is the payload shown.
        assert shown["payload"] == rx.hits[0].body
        missing = cli("outbox", "show", "999999", *c)
        assert (missing.returncode, missing.stderr.strip()) == (1, "outbox: no outbox row 999999")

        kept = cli_json("outbox", "purge", "--sent-before", "1h", *c)
        assert kept["deleted"] == 0
        gone = cli_json("outbox", "purge", "--sent-before", "2999-01-01", *c)
        assert gone["deleted"] == 1
        assert cli_json("outbox", "list", *c) == []


def test_outbox_list_filters(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        c = ("--config", str(config))
        append_lines(
            tmp_path / "results.log",
            [result_line(1, host="a"), result_line(2, host="b"), result_line(3, host="b")],
        )
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_sent", 3)
        assert len(cli_json("outbox", "list", *c)) == 3
        assert {r["host"] for r in cli_json("outbox", "list", "--host", "b", *c)} == {"b"}
        assert len(cli_json("outbox", "list", "--host", "b", *c)) == 2
        assert (
            len(cli_json("outbox", "list", "--state", "sent", "--rule", "reverse-shell", *c)) == 3
        )
        assert cli_json("outbox", "list", "--state", "dead", *c) == []
        assert cli_json("outbox", "list", "--notifier", "other", *c) == []
        assert len(cli_json("outbox", "list", "--since", "1h", *c)) == 3
        assert cli_json("outbox", "list", "--since", "2999-01-01T00:00:00Z", *c) == []
        bad = cli("outbox", "list", "--since", "yesterday", *c)
        assert bad.returncode == 1
        assert "not a time" in bad.stderr


def test_test_notifier_sends_one_marked_alert_and_never_touches_the_outbox(
    tmp_path: Path,
) -> None:
    with receiver() as rx:
        good = write_config(tmp_path, rx.url)
        done = cli("test-notifier", "hook", "--config", str(good))
        assert done.returncode == 0, done.stderr
        assert "hook (webhook): delivered, HTTP 200: accepted" in done.stdout
        (hit,) = rx.hits
        assert hit.body["rule"] == "test-notifier"
        assert hit.body["host"] == "tracked-connections-test"
        assert "TEST ALERT" in json.dumps(hit.body)
        assert hit.headers["webhook-id"].startswith("test-")

        typo = write_config(tmp_path, rx.base + "/hoook", name="typo.yaml")
        doc = json.loads(cli("test-notifier", "hook", "--json", "--config", str(typo)).stdout)
        assert (doc["delivered"], doc["http_status"], doc["retryable"]) == (False, 404, False)
        assert "HTTP 404" in doc["outcome"]
        assert rx.count(404) == 1

        unknown = cli("test-notifier", "nope", "--config", str(good))
        assert unknown.returncode == 1
        assert "no notifier named 'nope' (configured: hook)" in unknown.stderr
        # No state database was created or written.
        assert not (tmp_path / "state" / "state.sqlite3").exists()


def test_status_before_the_first_run_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/hook")
    done = cli("status", "--config", str(config))
    assert done.returncode == 1
    assert "no state database (has run ever started?)" in done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_status_reads_while_run_writes(tmp_path: Path, sig: int) -> None:
    """``status`` beside a running service: the counts move as the service delivers."""
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        with service(config, tmp_path / "run.log") as svc:
            for n in range(5):
                append_lines(tmp_path / "results.log", [result_line(n)])
                svc.wait_event("notify_sent", n + 1)
                doc = cli_json("status", "--config", str(config))
                assert doc["destinations"]["hook"]["sent"] == n + 1
                assert doc["destinations"]["hook"]["last_success_at"] <= time.time()
            svc.signal(sig)
            assert svc.proc.wait(30) == 0


def test_test_notifier_refuses_a_response_action(tmp_path: Path) -> None:
    """A command (or Fleet) notifier acts on a host: a test alert is never sent to it."""
    marker = tmp_path / "ran"
    extra = """  - name: isolate
    notify: [act]
    remote_port: [5555]
"""
    config = write_config(tmp_path, "http://127.0.0.1:9/hook", extra=extra)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "delivery:",
            f"  - name: act\n    type: command\n    command: [/usr/bin/touch, {marker}]\ndelivery:",
        ),
        encoding="utf-8",
    )
    done = cli("test-notifier", "act", "--config", str(config))
    assert done.returncode == 1, done.stdout
    assert "act is a response action (type command), not a message destination" in done.stderr
    assert not marker.exists()


def test_hostile_host_names_and_command_lines_never_reach_the_terminal_raw(
    tmp_path: Path,
) -> None:
    """Host identifiers and command lines come from the monitored host: ESC sequences
    and bidi overrides are printed as escapes, in text and in JSON."""
    host = "web\x1b]0;owned\x07\x1b[2J\u202eevil"
    cmdline = "nc \x1b[31mred\r\u202e 4444"
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        c = ("--config", str(config))
        append_lines(tmp_path / "results.log", [result_line(1, host=host, cmdline=cmdline)])
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_sent")
        outputs = [
            cli("outbox", "list", *c),
            cli("outbox", "list", "--json", *c),
            cli("outbox", "show", "1", *c),
            cli("outbox", "show", "1", "--json", *c),
            cli("status", *c),
        ]
        for done in outputs:
            assert done.returncode == 0, done.stderr
            for raw in ("\x1b", "\x07", "\r", "\u202e"):
                assert raw not in done.stdout, (done.args, raw)
        assert "web\\x1B]0;owned\\x07\\x1B[2J\\u202Eevil" in outputs[0].stdout
        (row,) = json.loads(outputs[1].stdout)
        assert row["host"] == host
        assert json.loads(outputs[3].stdout)["alert"]["connection"]["cmdline"] == cmdline


def test_outbox_list_finds_a_host_by_its_hostname_as_a_silence_does(tmp_path: Path) -> None:
    # On Fleet the host identifier is a UUID; the on-call person knows the name. The
    # --host filter takes what silence add --host takes: the identifier or the
    # hostname decoration, exactly.
    uuid = "ABD57954-4C16-5A0F-AE82-0F209075ADEC"
    named = {"host_uuid": uuid, "hostname": "web-03.example.com"}
    with receiver() as rx:
        config = write_config(tmp_path, rx.url)
        c = ("--config", str(config))
        append_lines(
            tmp_path / "results.log",
            [
                result_line(1, host=uuid, decorations=named),
                result_line(2, host="web-03.example"),
                result_line(3, host="other", decorations={"hostname": "web-03"}),
            ],
        )
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_sent", 3)
        by_name = cli_json("outbox", "list", "--host", "web-03.example.com", *c)
        assert [r["host"] for r in by_name] == [uuid]
        assert cli_json("outbox", "list", "--host", uuid, *c) == by_name
        assert [r["host"] for r in cli_json("outbox", "list", "--host", "web-03", *c)] == ["other"]
        assert cli_json("outbox", "list", "--host", "web-03.example.co", *c) == []
        text = cli("outbox", "list", "--host", "web-03.example.com", *c)
        assert text.returncode == 0, text.stderr
        assert uuid in text.stdout
