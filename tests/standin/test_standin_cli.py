"""``python -m osqueryd_standin`` end to end: launch, schedule, log, stop on SIGTERM."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from standin_helpers import FakeExtension, wait_until

from osqueryd_standin.cli import build_parser


def test_bool_flags_parse_like_osqueryd() -> None:
    parser = build_parser()
    args = parser.parse_args(["--logger_numerics", "--logger_event_type", "false", "--ephemeral=t"])
    assert (args.logger_numerics, args.logger_event_type, args.ephemeral) == (True, False, True)
    assert parser.parse_args([]).logger_event_type is True


def test_cli_runs_until_sigterm(workdir: Path) -> None:
    ext = FakeExtension(workdir)
    ext.set_rows([{"id": "a", "port": "7"}])
    pack = workdir / "netmon.conf"
    pack.write_text(
        json.dumps(
            {
                "discovery": ["SELECT 1 FROM osquery_registry WHERE name = 'fake_table'"],
                "queries": {"tracked": {"query": "SELECT id, port FROM fake_table", "interval": 1}},
            }
        )
    )
    logs = workdir / "logs"
    env = dict(os.environ, **ext.env())
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "osqueryd_standin",
            "--extensions_socket", str(workdir / "osquery.em"),
            "--extension", shlex.join(ext.command()),
            "--pack", f"netmon={pack}",
            "--logger_path", str(logs),
            "--host_identifier", "cli-host",
            "--extensions_interval", "1",
            "--ephemeral",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    results = logs / "osqueryd.results.log"
    try:
        assert wait_until(lambda: results.exists() and results.stat().st_size > 0, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0].decode()
    assert proc.returncode == 0, output
    line = json.loads(results.read_text().splitlines()[0])
    assert line["name"] == "pack_netmon_tracked"
    assert line["hostIdentifier"] == "cli-host"
    assert line["columns"] == {"id": "a", "port": "7"}
    ext_pid = next(r["pid"] for r in ext.trace() if "start" in r)
    assert wait_until(lambda: not Path(f"/proc/{ext_pid}").exists(), 5)
    assert "Registering extension (fake_ext" in output
