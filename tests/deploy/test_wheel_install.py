"""The wheel installs whole: a fresh virtual environment gets the console scripts,
``--version``, and ``init DIR`` writes a pack, configs and a unit that work.

Offline: the wheel is built without build isolation (setuptools and wheel come with
the dev extras) and installed with ``--no-index --no-deps``; the dependencies are
taken from this environment's site-packages through a ``.pth`` file.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from alert_service import __version__

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = (
    "tracked-connections-alerts",
    "tracked-connections-extension",
    "tracked-connections-install-extension",
    "osqueryd-standin",
)


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel installed (dependencies borrowed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp / "dist"), str(ROOT)],
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp / "dist").glob("tracked_connections-*.whl")
    env_dir = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    assert made.returncode == 0, made.stderr
    python = env_dir / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
    # The dependencies: this environment's site-packages, after the venv's own.
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "borrowed-dependencies.pth").write_text("\n".join(ours) + "\n")
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install",
         "--no-index", "--no-deps", str(wheel)],
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return env_dir


def test_the_installed_package_is_the_wheel(venv: Path) -> None:
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import alert_service; print(alert_service.__file__)"],
        cwd=venv,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_has_version(venv: Path, script: str) -> None:
    shown = _run([str(venv / "bin" / script), "--version"], cwd=venv)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split()[:2] == [script, __version__]


def test_init_writes_pack_config_and_unit_that_work(venv: Path, tmp_path: Path) -> None:
    alerts = str(venv / "bin" / "tracked-connections-alerts")
    target = tmp_path / "etc"
    first = _run([alerts, "init", str(target)], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    pack = json.loads((target / "packs" / "tracked_connections.conf").read_text())
    assert "tracked_connections" in pack["queries"]["tracked_connections"]["query"]
    assert (target / "packs" / "fleet" / "tracked_connections.query.yml").is_file()
    assert (target / "LICENSE").read_text().lstrip().startswith("Apache License")
    # The unit's documentation is a file that init wrote.
    unit = (target / "deploy" / "tracked-connections-alerts.service").read_text()
    (doc,) = [line for line in unit.splitlines() if line.startswith("Documentation=")]
    assert doc == f"Documentation=file://{target.resolve()}/docs/deploy.md"
    assert (target / "docs" / "deploy.md").is_file()
    # The written configs pass check-config, in both argument forms.
    env = dict(os.environ, SLACK_WEBHOOK_URL="https://hooks.slack.com/services/T/B/x",
               SOC_WEBHOOK_URL="https://soc.example/hook", SOC_WEBHOOK_AUTH="Bearer x")  # fmt: skip
    for config in (target / "deploy" / "alerts.yaml", target / "examples" / "alerts.example.yaml"):
        for argv in ([str(config)], ["--config", str(config)]):
            checked = _run([alerts, "check-config", *argv], cwd=tmp_path, env=env)
            assert (checked.returncode, checked.stdout.strip()) == (0, "OK"), checked.stderr
    # A second init refuses to overwrite, naming the files; --force overwrites.
    config = target / "deploy" / "alerts.yaml"
    config.write_text("edited: true\n")
    again = _run([alerts, "init", str(target)], cwd=tmp_path)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr and str(config) in again.stderr
    assert config.read_text() == "edited: true\n"
    forced = _run([alerts, "init", "--force", str(target)], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert config.read_text() != "edited: true\n"
