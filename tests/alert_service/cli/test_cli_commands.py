"""CLI commands run as subprocesses: check-config, replay, run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from alerts_support import DATA, REPO_ROOT, ScriptedEndpoint

import alert_service.cli

RUN_TIMEOUT_SECS = 30


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_service", *args],
        cwd=REPO_ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECS,
        check=False,
    )


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOC_WEBHOOK")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def write_config(tmp_path: Path, url: str, log: Path, start_at: str = "end") -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"""
log_level: debug
state_dir: {tmp_path / "state"}
sources:
  - path: {log}
    start_at: {start_at}
    poll_interval_secs: 0.05
notifiers:
  - name: local
    type: webhook
    url: {url}
    timeout_secs: 5
    headers:
      Authorization: {{env: TEST_HOOK_TOKEN}}
delivery:
  max_attempts: 3
  initial_backoff_secs: 0.05
  max_backoff_secs: 0.2
rules:
  - name: irc
    notify: [local]
    remote_port: ["6660-6669"]
  - name: reverse-shell
    notify: [local]
    remote_port: [4444]
""",
        encoding="utf-8",
    )
    return path


def test_check_config_ok() -> None:
    done = cli(
        "check-config",
        "examples/alerts.example.yaml",
        env={"SOC_WEBHOOK_URL": "https://h.example/x", "SOC_WEBHOOK_AUTH": "t"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "OK\n", "")


def test_check_config_warns_of_bad_lines_in_domain_lists(tmp_path: Path) -> None:
    domains = tmp_path / "domains.txt"
    domains.write_text("evil.example\n198.51.100.7\nok.example\nhttp://x.example/\n",
                       encoding="utf-8")  # fmt: skip
    config = tmp_path / "c.yaml"
    config.write_text(
        "sources: [{path: /x}]\n"
        "notifiers: [{name: local, type: webhook, url: 'http://127.0.0.1:9/'}]\n"
        "rules: [{name: r, notify: [local], any_of: [{remote_hostname: "
        f"{{domain_files: ['{domains}']}}}}]}}]\n",
        encoding="utf-8",
    )
    done = cli("check-config", str(config))
    assert (done.returncode, done.stdout) == (0, "OK\n")  # bad lines are never fatal
    assert done.stderr.splitlines() == [
        f"WARNING: {config}: $.rules[0].any_of[0].remote_hostname.domain_files[0]: {domains}: "
        "2 bad lines skipped (2 used); line 2: '198.51.100.7' is an address, not a domain "
        "(address lists take it); line 4: 'http://x.example/' is not a domain name (a URL "
        "or a port?)",
    ]


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sources: [{path: /x, start_at: middle}]\n"
        "notifiers: [{name: local, type: webhook, url: 'ftp://x'}]\n"
        "rules: [{name: r, notify: [nobody], remote_port: ['9-1']}]\n",
        encoding="utf-8",
    )
    done = cli("check-config", str(bad))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"{bad}: $.notifiers[0].url: 'ftp://x' does not match '^https?://[^\\\\s]+$'",
        f"{bad}: $.rules[0].notify[0]: no notifier named 'nobody'",
        f"{bad}: $.rules[0].remote_port[0]: empty port range '9-1': start is above end",
        f"{bad}: $.sources[0].start_at: 'middle' is not one of ['beginning', 'end']",
    ]


def test_check_config_missing_env_secret_is_reported_without_value(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/x", tmp_path / "r.log")
    done = cli("check-config", str(config))
    assert done.returncode == 1
    assert (
        "$.notifiers[0].headers.Authorization: environment variable TEST_HOOK_TOKEN" in done.stderr
    )


def test_usage_error_exits_2() -> None:
    done = cli("frobnicate")
    assert done.returncode == 2


def test_replay_prints_alerts_and_sends_nothing(tmp_path: Path, receiver: ScriptedEndpoint) -> None:
    config = write_config(tmp_path, receiver.url, tmp_path / "unused.log")
    done = cli(
        "replay",
        "--config",
        str(config),
        str(DATA / "event.jsonl"),
        str(DATA / "batch.jsonl"),
        str(DATA / "malformed.jsonl"),
        env={"TEST_HOOK_TOKEN": "Bearer sekrit"},
    )
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(a["rule"], a["action"], a["connection"]["remote_port"]) for a in alerts] == [
        ("irc", "added", 6667),
    ]
    assert alerts[0]["notify"] == ["local"]
    assert receiver.requests == []
    logs = [json.loads(line) for line in done.stderr.splitlines()]
    finished = [entry for entry in logs if entry["event"] == "replay_finished"]
    assert finished[0]["parse_errors"] == len((DATA / "malformed.jsonl").read_bytes().splitlines())
    assert "sekrit" not in done.stderr


def test_replay_missing_log_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9/x", tmp_path / "unused.log")
    done = cli(
        "replay",
        "--config",
        str(config),
        str(tmp_path / "absent.log"),
        env={"TEST_HOOK_TOKEN": "x"},
    )
    assert done.returncode == 1
    assert "replay_source_failed" in done.stderr


def wait_for_text(path: Path, text: str, timeout_secs: float = 15.0) -> str:
    deadline = time.monotonic() + timeout_secs
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text(encoding="utf-8") if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged; log so far:\n{content}")


def test_run_sends_exactly_one_alert_and_stops_on_sigterm(
    tmp_path: Path, receiver: ScriptedEndpoint
) -> None:
    log = tmp_path / "osqueryd.results.log"
    lines = (DATA / "event.jsonl").read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0])  # an old reverse-shell row: skipped (start_at end)
    config = write_config(tmp_path, receiver.url, log)
    receiver.answer(500)  # the first attempt fails, the retry succeeds
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=child_env({"TEST_HOOK_TOKEN": "Bearer sekrit"}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for_text(stderr_path, '"source_opened"')
            batch = json.loads((DATA / "batch.jsonl").read_bytes().splitlines()[0])
            batch["diffResults"]["added"] = batch["diffResults"]["added"][1:]  # the IRC row only
            batch["diffResults"]["removed"] = []
            with open(log, "ab") as fh:
                fh.write(lines[1])  # port 443: no rule
                fh.write(b"not json\n")
                fh.write(json.dumps(batch).encode() + b"\n")
            receiver.wait_for(2)
            time.sleep(0.3)  # anything else would arrive now
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(RUN_TIMEOUT_SECS) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first.body == second.body
    alert = second.json()
    assert alert["rule"] == "irc"
    assert alert["connection"]["remote_port"] == 6667
    assert second.headers["Authorization"] == "Bearer sekrit"
    log_text = stderr_path.read_text(encoding="utf-8")
    assert "sekrit" not in log_text
    events = [json.loads(line) for line in log_text.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "service_started"
    assert "notify_retrying" in names
    assert "line_parse_failed" in names
    stopped = events[-1]
    assert stopped["event"] == "service_stopped"
    assert (stopped["sent"], stopped["failed"], stopped["parse_errors"]) == (1, 0, 1)
    assert stopped["lines_read"] == 3


def test_run_reports_a_missing_source_in_health_and_metrics(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "osqueryd.results.log"
    log.parent.mkdir()  # run refuses a source whose directory does not exist either
    config = write_config(tmp_path, "http://127.0.0.1:9/x", log)
    config.write_text(
        config.read_text(encoding="utf-8") + "metrics: {listen_address: 127.0.0.1, port: 0}\n",
        encoding="utf-8",
    )
    stderr_path = tmp_path / "stderr.log"

    def get(port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
            cwd=REPO_ROOT,
            env=child_env({"TEST_HOOK_TOKEN": "x"}),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            text = wait_for_text(stderr_path, '"source_missing"')
            text = wait_for_text(stderr_path, '"ops_listening"')
            events = [json.loads(line) for line in text.splitlines()]
            port = next(e["port"] for e in events if e["event"] == "ops_listening")
            missing = next(e for e in events if e["event"] == "source_missing")
            assert missing["level"] == "warning"
            assert missing["path"] == str(log)
            status, body = get(port, "/health")
            health = json.loads(body)
            assert status == 200
            assert health["status"] == "degraded"
            assert health["source_problems"] == {str(log): "missing: no such file"}
            assert f"source {log}: missing: no such file" in health["reason"]
            metrics = get(port, "/metrics")[1]
            assert "alert_service_sources_missing 1.0" in metrics
            assert "alert_service_sources_followed 0.0" in metrics

            log.write_bytes(b"")
            wait_for_text(stderr_path, '"source_found"')
            health = json.loads(get(port, "/health")[1])
            assert (health["status"], health["source_problems"]) == ("ok", {})
            assert "reason" not in health
            metrics = get(port, "/metrics")[1]
            assert "alert_service_sources_missing 0.0" in metrics
            assert "alert_service_sources_followed 1.0" in metrics
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(RUN_TIMEOUT_SECS) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_run_exits_1_when_the_metrics_port_is_taken_as_documented(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"")
    config = write_config(tmp_path, "http://127.0.0.1:9/x", log)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config.write_text(
            config.read_text(encoding="utf-8")
            + f"metrics: {{listen_address: 127.0.0.1, port: {port}}}\n",
            encoding="utf-8",
        )
        done = cli("run", "--config", str(config), env={"TEST_HOOK_TOKEN": "x"})
    assert done.returncode == 1
    (failed,) = [
        e for e in map(json.loads, done.stderr.splitlines()) if e["event"] == "ops_listen_failed"
    ]
    assert failed["port"] == port
    # The exit-code documentation says so (the module docs and the user docs).
    assert "ops_listen_failed" in (alert_service.cli.__doc__ or "")
    table = (REPO_ROOT / "docs" / "alert-service.md").read_text(encoding="utf-8")
    run_row = next(line for line in table.splitlines() if line.startswith("| `run` |"))
    assert "metrics" in run_row.split("|")[4] and "ops_listen_failed" in run_row
