"""Response action ``command``: a real local program, arguments as a list, no shell."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from deliver_support import make_alert as shared_alert

from alert_service.config import build_config
from alert_service.errors import ConfigError, NotifyError
from alert_service.match import Alert
from alert_service.notify import DEFAULT_REGISTRY, CommandNotifier
from alert_service.notify.command import PLACEHOLDERS, substitute
from alert_service.secret import Secret

# Writes its argv, stdin and environment as one JSON line to $RECORD, then exits
# with $EXIT_WITH (default 0) after sleeping $SLEEP_SECS (default 0).
RECORDER = """\
import json, os, sys, time
record = {"argv": sys.argv[1:], "stdin": sys.stdin.read(), "env": dict(os.environ),
          "cwd": os.getcwd(), "pid": os.getpid()}
with open(os.environ["RECORD"], "a", encoding="utf-8") as fh:
    fh.write(json.dumps(record) + "\\n")
if os.environ.get("GRANDCHILD"):
    import subprocess
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.environ["GRANDCHILD"], "w") as fh:
        fh.write(str(child.pid))
print("recorder output line")
time.sleep(float(os.environ.get("SLEEP_SECS", "0")))
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""

EVIL_NAME = "nc; touch {marker} && echo $(id) `id` | cat > {marker} * ~ \\n\"'"


def make_alert(**columns: str | int | None) -> Alert:
    row: dict[str, str | int | None] = {
        "pid": 4242,
        "remote_address": "198.51.100.7",
        "remote_port": 4444,
        "name": "nc",
        "path": "/usr/bin/nc",
        "username": "www-data",
    }
    return shared_alert(notify=("isolate",), columns={**row, **columns})


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER, encoding="utf-8")
    return script


def notifier(recorder: Path, tmp_path: Path, *args: str, **options: Any) -> CommandNotifier:
    env = {"RECORD": str(tmp_path / "record.jsonl"), **options.pop("env", {})}
    return CommandNotifier.from_config(
        "isolate",
        {"command": [sys.executable, str(recorder), *args], "env": env, **options},
    )


def records(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "record.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- rendering -------------------------------------------------------------------------


def test_render_substitutes_each_argument_separately(recorder: Path, tmp_path: Path) -> None:
    alert = make_alert(name="a b", uid=None)
    n = notifier(
        recorder, tmp_path, "--pid={pid}", "{host}", "{name}", "{uid}", "{{literal}}", "{rule}"
    )
    payload = n.render(alert)
    assert payload["argv"] == [
        sys.executable,
        str(recorder),
        "--pid=4242",
        "web-01",
        "a b",
        "",
        "{literal}",
        "reverse-shell",
    ]
    assert payload["alert"] == alert.as_dict()
    assert n.render(alert) == payload  # pure: same input, same output


def test_substitute_accepts_only_plain_known_names() -> None:
    values = {"pid": "7", "name": "x"}
    assert substitute("{pid}-{name}", values) == "7-x"
    for bad in ("{pid.real}", "{pid[0]}", "{pid!r}", "{pid:>5}", "{}", "{0}", "{secret}", "}"):
        with pytest.raises(ValueError):
            substitute(bad, values)


def test_placeholders_cover_the_columns_and_alert_fields() -> None:
    assert {
        "pid",
        "remote_address",
        "remote_port",
        "name",
        "cmdline",
        "community_id",
    } < PLACEHOLDERS
    assert {"host", "rule", "alert_id", "query", "action", "unix_time"} < PLACEHOLDERS


# -- running ---------------------------------------------------------------------------


def test_shell_metacharacters_in_a_process_name_are_not_interpreted(
    recorder: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = EVIL_NAME.format(marker=marker)
    n = notifier(recorder, tmp_path, "--name", "{name}", "--", "{cmdline}")
    alert = make_alert(name=evil, cmdline=f"sh -c '{evil}'")
    n.notify(alert)
    [rec] = records(tmp_path)
    assert rec["argv"] == ["--name", evil, "--", f"sh -c '{evil}'"]
    assert not marker.exists()
    assert json.loads(rec["stdin"]) == alert.as_dict()
    assert rec["cwd"] == "/"


def test_environment_is_minimal_plus_configured(
    recorder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOC_WEBHOOK_URL", "https://hooks.example/secret")
    n = notifier(recorder, tmp_path, env={"ISOLATE_TOKEN": Secret("t0k", "env:ISOLATE_TOKEN")})
    alert = make_alert()
    n.notify(alert)
    [rec] = records(tmp_path)
    env = rec["env"]
    assert "SOC_WEBHOOK_URL" not in env
    assert env["ISOLATE_TOKEN"] == "t0k"
    assert env["TRACKED_CONNECTIONS_ALERT_ID"] == alert.id
    assert env["LANG"] == "C.UTF-8"
    assert env["PATH"].startswith("/usr/local/sbin:")


def test_non_zero_exit_is_an_error_with_output(recorder: Path, tmp_path: Path) -> None:
    n = notifier(recorder, tmp_path, env={"EXIT_WITH": "3"})
    with pytest.raises(NotifyError) as caught:
        n.notify(make_alert())
    err = caught.value
    assert err.error_type == "exit_status"
    assert err.retryable is False
    assert "exited with status 3" in str(err)
    assert "recorder output line" in str(err)


def test_listed_exit_codes_are_retryable(recorder: Path, tmp_path: Path) -> None:
    n = notifier(recorder, tmp_path, env={"EXIT_WITH": "75"}, retry_exit_codes=[75])
    for expected_runs in (1, 2):
        with pytest.raises(NotifyError) as caught:
            n.notify(make_alert())
        assert (caught.value.retryable, caught.value.error_type) == (True, "exit_status")
        assert len(records(tmp_path)) == expected_runs


def test_timeout_kills_the_process_group(recorder: Path, tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    n = notifier(
        recorder,
        tmp_path,
        env={"SLEEP_SECS": "60", "GRANDCHILD": str(grandchild_file)},
        timeout_secs=1.0,
    )
    started = time.monotonic()
    with pytest.raises(NotifyError) as caught:
        n.notify(make_alert())
    assert time.monotonic() - started < 10
    assert caught.value.error_type == "timeout"
    assert caught.value.retryable is False
    [rec] = records(tmp_path)
    grandchild = int(grandchild_file.read_text())
    for pid in (rec["pid"], grandchild):
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), f"pid {pid} survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_missing_program_is_a_spawn_error(tmp_path: Path) -> None:
    n = CommandNotifier.from_config("isolate", {"command": [str(tmp_path / "nope"), "{pid}"]})
    with pytest.raises(NotifyError) as caught:
        n.notify(make_alert())
    assert caught.value.error_type == "spawn"
    assert caught.value.retryable is False


def test_send_recomputes_argv_from_a_stored_alert(recorder: Path, tmp_path: Path) -> None:
    n = notifier(recorder, tmp_path, "{pid}")
    alert = make_alert()
    n.send({"alert": alert.as_dict()}, idempotency_key=alert.id)
    assert records(tmp_path)[0]["argv"] == ["4242"]


def test_baseline_digests_are_refused(recorder: Path, tmp_path: Path) -> None:
    n = notifier(recorder, tmp_path, "{pid}")
    alert = make_alert().as_dict()
    digest = {**alert, "kind": "baseline_digest", "row_count": 3, "rows": [{}, {}, {}]}
    with pytest.raises(NotifyError) as caught:
        n.send({"alert": digest}, idempotency_key=alert["id"])
    assert caught.value.retryable is False
    assert "baseline digest of 3 rows" in str(caught.value)
    assert records(tmp_path) == []


# -- configuration ---------------------------------------------------------------------


def config_doc(command: list[Any], **options: Any) -> dict[str, Any]:
    return {
        "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
        "notifiers": [{"name": "isolate", "type": "command", "command": command, **options}],
        "rules": [{"name": "r", "notify": ["isolate"], "remote_port": [4444]}],
    }


def test_valid_command_config_builds_the_notifier() -> None:
    config = build_config(
        config_doc(["/usr/local/sbin/isolate", "--pid", "{pid}", "{{x}}"], timeout_secs=5),
        environ={},
    )
    [entry] = config.notifiers
    built = DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options)
    assert isinstance(built, CommandNotifier)
    assert built.settings.command == ("/usr/local/sbin/isolate", "--pid", "{pid}", "{{x}}")
    assert built.settings.timeout_secs == 5.0


@pytest.mark.parametrize(
    ("command", "path", "message"),
    [
        (
            ["/bin/echo", "{password}"],
            "$.notifiers[0].command[1]",
            "unknown placeholder: {password}",
        ),
        (["/bin/echo", "{pid.__class__}"], "$.notifiers[0].command[1]", "{pid.__class__}"),
        (["/bin/echo", "{pid!r}"], "$.notifiers[0].command[1]", "only {name} is allowed: {pid!r}"),
        (["/bin/echo", "{pid"], "$.notifiers[0].command[1]", "write {{ and }} for literal"),
        (["{path}", "x"], "$.notifiers[0].command[0]", "cannot contain placeholders"),
        ([], "$.notifiers[0].command", "should be non-empty"),
    ],
)
def test_bad_templates_are_config_errors(command: list[str], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(config_doc(command), environ={})
    found = {p.path: p.message for p in caught.value.problems}
    assert path in found, caught.value
    assert message in found[path]


def test_env_values_may_be_secrets_from_the_environment() -> None:
    doc = config_doc(["/bin/true"], env={"TOKEN": {"env": "ISOLATE_TOKEN"}})
    config = build_config(doc, environ={"ISOLATE_TOKEN": "abc"})
    token = config.notifiers[0].options["env"]["TOKEN"]
    assert isinstance(token, Secret) and token.reveal() == "abc"
    with pytest.raises(ConfigError) as caught:
        build_config(doc, environ={})
    assert "ISOLATE_TOKEN is not set" in str(caught.value)


def test_the_process_env_is_untouched(recorder: Path, tmp_path: Path) -> None:
    before = dict(os.environ)
    notifier(recorder, tmp_path, env={"X": "1"}).notify(make_alert())
    assert dict(os.environ) == before
