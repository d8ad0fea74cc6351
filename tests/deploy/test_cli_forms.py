"""Every subcommand takes its configuration as ``FILE`` or ``--config FILE``, and
every ``--help`` has a description and an example. Real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = [sys.executable, "-m", "alert_service"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ALERTS, *argv], capture_output=True, text=True, cwd=ROOT, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "sources": [{"path": str(tmp_path / "results.log")}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"name": "c2", "notify": ["hook"], "remote_port": [4444]}],
    }), encoding="utf-8")  # fmt: skip
    return path


def _log(tmp_path: Path) -> Path:
    line = {
        "name": "pack_tracked_connections_tracked_connections", "hostIdentifier": "h",
        "calendarTime": "Sat Dec  5 10:00:00 2026 UTC", "unixTime": 1796464800, "epoch": 0,
        "counter": 1, "numerics": False, "action": "added",
        "columns": {"pid": "42", "family": "2", "protocol": "6", "local_address": "10.0.0.2",
                    "local_port": "50000", "remote_address": "192.0.2.7", "remote_port": "4444",
                    "name": "nc", "direction": "outbound"},
    }  # fmt: skip
    log = tmp_path / "osqueryd.results.log"
    log.write_text(json.dumps(line) + "\n", encoding="utf-8")
    return log


def test_replay_takes_file_or_config(config: Path, tmp_path: Path) -> None:
    log = _log(tmp_path)
    positional = _run("replay", str(config), str(log))
    option = _run("replay", "--config", str(config), str(log))
    assert positional.returncode == option.returncode == 0, positional.stderr
    assert positional.stdout == option.stdout
    (alert,) = [json.loads(line) for line in positional.stdout.splitlines()]
    assert (alert["rule"], alert["connection"]["remote_port"]) == ("c2", 4444)


def test_run_and_check_config_take_file_or_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: 3\n", encoding="utf-8")
    for command in ("run", "check-config"):
        positional = _run(command, str(bad))
        option = _run(command, "--config", str(bad))
        assert positional.returncode == option.returncode == 1
        assert positional.stderr == option.stderr and str(bad) in positional.stderr


def test_config_is_required_once(config: Path) -> None:
    for command in ("run", "check-config", "replay"):
        assert _run(command).returncode == 2
    clash = _run("check-config", str(config), "--config", str(config) + ".other")
    assert clash.returncode == 2 and "give the configuration once" in clash.stderr


@pytest.mark.parametrize(
    "command", ["run", "check-config", "cluster-status", "status", "replay", "init"]
)
def test_every_subcommand_help_has_a_description_and_an_example(command: str) -> None:
    shown = _run(command, "--help")
    assert shown.returncode == 0
    usage, description = shown.stdout.split("\n\n")[:2]
    assert usage.startswith("usage:") and len(description.strip()) > 20
    example = shown.stdout.split("example:\n", 1)[1]
    assert example.strip().startswith(f"tracked-connections-alerts {command} ")
