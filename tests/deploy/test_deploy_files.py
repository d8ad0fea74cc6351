"""The files under deploy/ agree with each other, with the code and with osquery's rules,
and a deployment built from them works end to end with the stand-in.

* deploy/osquery.flags — known osquery flags (tests/helpers/forms/osquery.py names the
  osquery 5.23 file defining each), the values the other files assume;
* deploy/extensions.load — lists the installer's default launcher;
* deploy/osquery.conf — the pack, under the name the alert service knows;
* deploy/tracked-connections-alerts.service — ``systemd-analyze verify`` clean,
  unprivileged, state in StateDirectory= matching ``state_dir``;
* deploy/alerts.yaml — passes ``check-config`` and follows the flags' log path.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_service.config import load_config
from extension.install import DEFAULT_DIR, DEFAULT_NAME, autoload_lines, autoload_problems, install
from extension.serve.server import EXTENSION_NAME
from osqueryd_standin import Standin
from tests.helpers.forms.osquery import FLAGS as OSQUERY_FLAGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KNOWN_FLAGS = set(OSQUERY_FLAGS)
# Environment the example configuration's secrets need.
SECRETS_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "FLEET_API_TOKEN": "token",
}


def flags() -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in (DEPLOY / "osquery.flags").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"--([a-z_]+)=(.*)", line)
        assert match, f"not a --flag=value line: {line!r}"
        name, value = match.groups()
        assert name not in out, f"--{name} given twice"
        out[name] = value
    return out


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read(DEPLOY / "tracked-connections-alerts.service", encoding="utf-8")
    return parser


def alerts_doc() -> dict[str, Any]:
    doc = yaml.safe_load((DEPLOY / "alerts.yaml").read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


# -- osquery side ---------------------------------------------------------------------


def test_flags_are_known_and_consistent() -> None:
    f = flags()
    assert set(f) <= KNOWN_FLAGS, set(f) - KNOWN_FLAGS
    assert f["extensions_autoload"] == "/etc/osquery/extensions.load"
    assert f["extensions_require"] == EXTENSION_NAME == "tracked_connections"
    assert int(f["extensions_timeout"]) >= 3
    assert int(f["extensions_interval"]) >= 1
    assert f["disable_extensions"] == "false"
    assert f["logger_plugin"] == "filesystem"
    assert f["logger_event_type"] == "true"
    assert f["logger_rotate"] == "true"
    assert int(f["logger_rotate_size"]) > 0 and int(f["logger_rotate_max_files"]) > 0
    assert re.fullmatch(r"0[0-7]{3}", f["logger_mode"])
    assert not int(f["logger_mode"], 8) & 0o007, "results (command lines) not world-readable"
    assert f["config_plugin"] == "filesystem"
    assert f["config_path"] == "/etc/osquery/osquery.conf"
    assert f["host_identifier"] in {"hostname", "uuid", "instance", "ephemeral", "specified"}
    # Bounds how long a failed discovery keeps the pack off (osquery's default: 3600 s).
    assert 1 <= int(f["pack_refresh_interval"]) <= 60


def test_fleetd_flags_load_the_extension_and_leave_fleetd_its_flags() -> None:
    text = (DEPLOY / "fleetd.flags").read_text(encoding="utf-8")
    names = [line.split("=")[0] for line in text.splitlines() if line.startswith("--")]
    assert names == ["--extensions_autoload", "--extensions_timeout", "--extensions_require"]
    assert "--extensions_autoload=/etc/osquery/extensions.load" in text
    assert "--extensions_require=tracked_connections" in text


def test_extensions_load_lists_the_installer_default() -> None:
    lines = autoload_lines((DEPLOY / "extensions.load").read_text(encoding="utf-8"))
    assert lines == [f"{DEFAULT_DIR}/{DEFAULT_NAME}"]


def test_osquery_conf_schedules_the_pack() -> None:
    conf = json.loads((DEPLOY / "osquery.conf").read_text(encoding="utf-8"))
    assert conf["packs"] == {"tracked_connections": "/etc/osquery/packs/tracked_connections.conf"}
    assert (REPO / "packs" / "tracked_connections.conf").is_file()


# -- alert service side ---------------------------------------------------------------


def test_alerts_yaml_is_valid() -> None:
    config = load_config(str(DEPLOY / "alerts.yaml"), environ=SECRETS_ENV)
    assert config.rules and config.notifiers


def test_alerts_yaml_follows_the_flags_log_path() -> None:
    paths = [s["path"] for s in alerts_doc()["sources"]]
    assert f"{flags()['logger_path']}/osqueryd.results.log" in paths


def test_alerts_yaml_knows_the_pack_name() -> None:
    conf = json.loads((DEPLOY / "osquery.conf").read_text(encoding="utf-8"))
    known = alerts_doc().get("known_packs", ["tracked_connections"])
    assert set(conf["packs"]) <= set(known)


def test_actions_are_off_in_the_example() -> None:
    """Response actions are opt-in: the production example names none in a rule."""
    doc = alerts_doc()
    action_types = {"command", "fleet_script", "fleet_live_query"}
    actions = {n["name"] for n in doc["notifiers"] if n["type"] in action_types}
    for rule in doc["rules"]:
        assert not set(rule["notify"]) & actions, rule["name"]


# -- systemd --------------------------------------------------------------------------


def test_unit_is_unprivileged_and_hardened() -> None:
    service = unit()["Service"]
    assert service["User"] not in {"", "root", "0"}
    assert service["StateDirectory"] == "tracked-connections-alerts"
    assert "/var/log/osquery" in service["ReadOnlyPaths"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
    }.items():
        assert service[key] == value, key
    assert service["ExecStart"].endswith(
        "tracked-connections-alerts run --config /etc/tracked-connections/alerts.yaml"
    )
    assert "check-config /etc/tracked-connections/alerts.yaml" in service["ExecStartPre"]


def test_state_dir_matches_the_units_state_directory() -> None:
    doc = alerts_doc()
    assert "state_dir" in doc, "deploy/alerts.yaml must set state_dir to the unit's directory"
    assert doc["state_dir"] == "/var/lib/" + unit()["Service"]["StateDirectory"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = (DEPLOY / "tracked-connections-alerts.service").read_text(encoding="utf-8")
    local = text.replace("/opt/tracked-connections/venv", str(Path(sys.executable).parent.parent))
    path = tmp_path / "tracked-connections-alerts.service"
    path.write_text(local, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    relevant = [line for line in output.splitlines() if path.name in line]
    assert relevant == [], relevant


# -- end to end: autoload -> stand-in -> pack -> results log -> alert service ----------


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="tce", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def autoload(load_file: Path) -> list[str]:
    """Extensions osqueryd would autoload from ``load_file`` (paths passing its checks)."""
    lines = autoload_lines(load_file.read_text(encoding="utf-8"))
    return [p for p in lines if not autoload_problems(p, allowed_uids=(0, os.geteuid()))]


def test_deployment_end_to_end(root: Path) -> None:
    f = flags()
    ext_dir = root / DEFAULT_DIR.lstrip("/")
    load_file = root / f["extensions_autoload"].lstrip("/")
    install(ext_dir, extensions_load=load_file)
    [launcher] = autoload(load_file)

    logs = root / f["logger_path"].lstrip("/")
    conf = json.loads((DEPLOY / "osquery.conf").read_text(encoding="utf-8"))
    [(pack_name, _)] = conf["packs"].items()
    osqd = Standin(
        str(root / "osquery.em"),
        logs,
        host_identifier="web-01",
        extensions_interval_secs=int(f["extensions_interval"]),
        extensions_timeout_secs=int(f["extensions_timeout"]),
        run_scheduler=False,
        ephemeral=True,
        kill_grace_secs=5,
    )
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    # Our client end, by its socket inode: on a busy host other rows share port numbers.
    inode = str(os.fstat(client.fileno()).st_ino)
    try:
        with osqd:
            osqd.launch_extension(launcher)
            osqd.wait_for_extension(f["extensions_require"], 30)
            osqd.add_pack(pack_name, REPO / "packs" / "tracked_connections.conf")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                osqd.run_scheduled_once()
                text = osqd.results_log_path.read_text(encoding="utf-8")
                if f'"socket":"{inode}"' in text:
                    break
                time.sleep(0.3)
    finally:
        client.close()
        server.close()
    lines = [json.loads(line) for line in text.splitlines()]
    names = {line["name"] for line in lines}
    assert names == {f"pack_{pack_name}_tracked_connections"}
    mine = [line for line in lines if line["columns"].get("socket") == inode]
    assert mine and mine[0]["columns"]["remote_port"] == str(port)
    assert mine[0]["columns"]["pid"] == str(os.getpid())

    config = alerts_doc()
    config["sources"] = [{"path": str(osqd.results_log_path), "start_at": "beginning"}]
    config.pop("state_dir", None)
    config["rules"] = [
        {"name": "e2e", "notify": [config["notifiers"][0]["name"]], "remote_port": [port]}
    ]
    config_path = root / "alerts.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    env = {**os.environ, **SECRETS_ENV}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alert_service",
            "replay",
            "--config",
            str(config_path),
            str(osqd.results_log_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    alerts = [json.loads(line) for line in done.stdout.splitlines()]
    assert alerts and {a["rule"] for a in alerts} == {"e2e"}
    assert alerts[0]["connection"]["remote_port"] == port
    assert alerts[0]["query"] == f"pack_{pack_name}_tracked_connections"
