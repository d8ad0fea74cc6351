"""What ``replay`` and ``check-config`` import: nothing that only ``run`` uses.

Both commands read the configuration and stop (``replay`` after printing its alerts),
so the metrics server (``prometheus_client``, ``asyncio``, ``http.server``), the
delivery workers and what notifiers send with (``requests``, ``urllib3``, ``ssl``,
``email.utils``) and the web console only cost them start-up time. Each command runs
for real in a fresh interpreter, which then writes the names in ``sys.modules``; a
control run that imports the metrics server shows the check sees such an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alerts_support import DATA, REPO_ROOT

RUN_TIMEOUT_SECS = 60

RUN_ONLY = (
    "alert_service.console.app",
    "alert_service.deliver.service",
    "alert_service.deliver.worker",
    "alert_service.ops.metrics",
    "alert_service.ops.server",
    "asyncio",
    "email.utils",
    "http.server",
    "prometheus_client",
    "requests",
    "ssl",
    "urllib3",
)
"""Packages and modules (with their submodules) that only ``run`` needs: the metrics
server, the delivery workers, the web console, and what notifiers use to send."""

# Runs the command line in-process, then writes every module name loaded, whatever
# the exit code.
_PROBE = """
import json, sys
out, first, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    if first:
        __import__(first)
    from alert_service.cli import main
    code = main(argv)
finally:
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(sorted(sys.modules), fh)
sys.exit(code)
"""


def loaded_modules(tmp_path: Path, argv: list[str], first: str = "") -> set[str]:
    """Module names loaded by ``tracked-connections-alerts ARGV`` in a fresh process.

    ``first`` is imported before the command runs (the control case).
    """
    out = tmp_path / "modules.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({"SOC_WEBHOOK_URL": "https://h.example/x", "SOC_WEBHOOK_AUTH": "t"})
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), first, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(out.read_text(encoding="utf-8")))


def run_only(modules: set[str]) -> list[str]:
    """The names in ``modules`` that are, or are under, one of :data:`RUN_ONLY`."""
    return sorted(
        name for name in modules if any(name == p or name.startswith(p + ".") for p in RUN_ONLY)
    )


# The example configuration has a ``metrics`` section and webhook notifiers, so its
# settings are read and built.
COMMANDS = {
    "replay": [
        "replay",
        "--config",
        "examples/alerts.example.yaml",
        str(DATA / "event.jsonl"),
        str(DATA / "batch.jsonl"),
    ],
    "check-config": ["check-config", "examples/alerts.example.yaml"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_imports_nothing_only_run_uses(tmp_path: Path, command: str) -> None:
    modules = loaded_modules(tmp_path, COMMANDS[command])
    assert run_only(modules) == []
    assert "alert_service.ops.config" in modules  # the metrics section was read


def test_the_check_sees_the_metrics_server_when_it_is_imported(tmp_path: Path) -> None:
    modules = loaded_modules(tmp_path, COMMANDS["replay"], first="alert_service.ops.server")
    found = run_only(modules)
    for name in ("alert_service.ops.server", "asyncio", "prometheus_client"):
        assert name in found
