"""The commands with every notifier: check-config, replay --render (sends nothing), and
``run`` end to end — log line → outbox → delivery, /metrics, kill -9 and restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from deliver_support import Answer, ScriptedEndpoint, serve_endpoint

HERE = Path(__file__).resolve().parent.parent  # tests/alert_service
REPO_ROOT = HERE.parents[1]
DATA = HERE / "data"
TIMEOUT_SECS = 30
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + out.get("PYTHONPATH", "")
    out.update(extra or {})
    return out


def cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_service", *args],
        cwd=REPO_ROOT,
        env=env(extra_env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECS,
        check=False,
    )


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with serve_endpoint() as state:
        yield state


def all_notifiers_config(tmp_path: Path, url: str, log: Path, metrics: bool = False) -> Path:
    key_file = tmp_path / "pd.key"
    key_file.write_text("R0UTINGKEY\n", encoding="utf-8")
    ioc = tmp_path / "ioc.txt"
    ioc.write_text("# feed\n198.51.100.0/24\n", encoding="utf-8")
    path = tmp_path / "alerts.yaml"
    path.write_text(
        f"""
log_level: info
state_dir: {tmp_path / "state"}
{"metrics: {listen_address: 127.0.0.1, port: 0}" if metrics else ""}
sources:
  - path: {log}
    start_at: beginning
    poll_interval_secs: 0.05
notifiers:
  - name: hook
    type: webhook
    url: {url}
    signing_secret: {{env: HOOK_SECRET}}
  - name: slack
    type: slack
    url: {{env: SLACK_URL}}
    rate_limit_per_minute: 600
  - name: teams
    type: teams
    url: {{env: SLACK_URL}}
    envelope: card
  - name: pd
    type: pagerduty
    routing_key: {{file: {key_file}}}
    url: {url}
delivery:
  initial_backoff_secs: 0.05
  max_backoff_secs: 0.2
  poll_interval_secs: 0.05
rules:
  - name: reverse-shell
    notify: [hook, slack, teams, pd]
    remote_port: [4444]
    actions: [added, removed]
  - name: ioc
    notify: [hook]
    remote_address: {{include_files: [{ioc}]}}
    actions: [added, removed]
    exclude:
      - process: {{name: {{exact: ["<unknown>"]}}}}
""",
        encoding="utf-8",
    )
    return path


def test_check_config_and_replay_render_every_notifier(
    tmp_path: Path, endpoint: ScriptedEndpoint
) -> None:
    config = all_notifiers_config(tmp_path, endpoint.url, tmp_path / "unused.log")
    secrets = {"HOOK_SECRET": SECRET, "SLACK_URL": endpoint.url}
    done = cli("check-config", str(config), extra_env=secrets)
    assert (done.returncode, done.stdout) == (0, "OK\n"), done.stderr

    done = cli(
        "replay", "--config", str(config), "--render", str(DATA / "event.jsonl"), extra_env=secrets
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {(x["rule"], x["type"]) for x in lines} == {
        ("reverse-shell", "webhook"),
        ("reverse-shell", "slack"),
        ("reverse-shell", "teams"),
        ("reverse-shell", "pagerduty"),
        ("ioc", "webhook"),
    }
    by_type = {x["type"]: x["payload"] for x in lines if x["rule"] == "reverse-shell"}
    assert by_type["slack"]["text"].startswith("[reverse-shell]")
    assert by_type["teams"]["type"] == "AdaptiveCard"
    assert by_type["pagerduty"]["event_action"] == "trigger"
    assert "R0UTINGKEY" not in done.stdout
    assert SECRET not in done.stdout + done.stderr
    assert endpoint.requests == []  # replay sends nothing

    done = cli("check-config", str(config))  # secrets missing: every one is listed
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 3


def wait_for(predicate: object, timeout_secs: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def logged(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]


def test_run_delivers_through_the_outbox_survives_kill_9_and_exports_metrics(
    tmp_path: Path, endpoint: ScriptedEndpoint
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"")
    config = all_notifiers_config(tmp_path, endpoint.url, log, metrics=True)
    secrets = {"HOOK_SECRET": SECRET, "SLACK_URL": endpoint.url}
    stderr = tmp_path / "run.log"

    def start() -> subprocess.Popen[bytes]:
        with open(stderr, "ab") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
                cwd=REPO_ROOT,
                env=env(secrets),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    event = json.loads((DATA / "event.jsonl").read_bytes().splitlines()[0])
    event["action"] = "added"

    def line(pid: int) -> bytes:
        row = {**event, "columns": {**event["columns"], "pid": str(pid)}}
        return json.dumps(row).encode() + b"\n"

    endpoint.default = Answer(503, body=b"down")
    proc = start()
    try:
        assert wait_for(lambda: any(e["event"] == "ops_listening" for e in logged(stderr)))
        port = next(e["port"] for e in logged(stderr) if e["event"] == "ops_listening")
        with open(log, "ab") as fh:
            for pid in range(1, 6):
                fh.write(line(pid))
        # 5 rows x (4 notifiers of reverse-shell + 1 of ioc) are queued while down.
        assert wait_for(lambda: endpoint.wait_for(3, 0) >= 3)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        text = metrics.decode()
        assert "alert_service_lines_read_total 5.0" in text
        assert 'alert_service_outbox_pending{destination="hook"} 10.0' in text
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
        assert health["status"] == "degraded"
        proc.send_signal(signal.SIGKILL)
        proc.wait(TIMEOUT_SECS)
        # A request the killed process had sent is still answered 503: only once the
        # endpoint has been quiet for a while does it start to accept. (Accepting a dead
        # sender's request would make its resend a legitimate duplicate.)
        seen = -1
        while seen != len(endpoint.requests):
            seen = len(endpoint.requests)
            time.sleep(1.0)
        endpoint.default = Answer(200, body=b"ok")
        proc = start()
        with open(log, "ab") as fh:
            fh.write(line(6))
        assert wait_for(lambda: len(endpoint.accepted()) >= 6 * 5, 30), logged(stderr)[-5:]
        time.sleep(0.5)  # anything extra would arrive now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_SECS) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    accepted = endpoint.accepted()
    hook = Counter(
        (r.headers["webhook-id"], r.json()["rule"]) for r in accepted if "webhook-id" in r.headers
    )
    assert len(hook) == 6 * 2  # 6 rows, two rules to the hook
    assert set(hook.values()) == {1}  # none twice across the kill -9
    pd = Counter(r.json()["dedup_key"] for r in accepted if "routing_key" in r.json())
    assert len(pd) == 6 and set(pd.values()) == {1}
    assert all(
        r.json()["routing_key"] == "R0UTINGKEY" for r in accepted if "routing_key" in r.json()
    )
    assert len(accepted) == 6 * 5
    text = stderr.read_text()
    assert "R0UTINGKEY" not in text and SECRET not in text
