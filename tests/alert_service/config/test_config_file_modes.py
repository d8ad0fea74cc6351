"""State is private outside systemd; files others could change are reported.

``run`` under a umask of 022 (the usual login default) must still create the state
directory 0700 and ``state.sqlite3`` (whose outbox holds command lines) 0600.
``check-config`` warns about a group- or world-writable config, ``{file:}`` secret or
IOC list (and a world-readable secret), and still exits 0.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alerts_support import REPO_ROOT

from alert_service.state import open_state


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_created_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        conn = open_state(tmp_path / "state" / "state.sqlite3")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    finally:
        os.umask(old)
    state = tmp_path / "state"
    assert _mode(state) == 0o700
    assert _mode(state / "state.sqlite3") == 0o600
    for extra in ("state.sqlite3-wal", "state.sqlite3-shm"):
        if (state / extra).exists():
            assert _mode(state / extra) & 0o077 == 0, extra
    conn.close()


def test_an_existing_open_database_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    open_state(path).close()
    path.chmod(0o644)
    open_state(path).close()
    assert _mode(path) == 0o600


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory under /tmp whose parents another user can pass through (pytest's
    own folders are root's 0700)."""
    top = Path(tempfile.mkdtemp(prefix="tc-owner-", dir="/tmp"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can create files for another user")
def test_root_creates_the_database_for_the_state_directory_owner(open_dir: Path) -> None:
    """An operator command run as root before the service ever ran (``silence add``)
    must not leave a root-owned database the service's user cannot open."""
    state = open_dir / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)  # the service's user, e.g. systemd's StateDirectory=
    conn = open_state(state / "state.sqlite3")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS probe (x)")
    conn.execute("COMMIT")
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in state.iterdir()}
    conn.close()
    assert owners["state.sqlite3"] == (65534, 65534)
    for extra in ("state.sqlite3-wal", "state.sqlite3-shm"):  # SQLite follows the database
        assert owners.get(extra, (65534, 65534)) == (65534, 65534), extra
    # ... and the service's user can open and write it (modules imported while root:
    # this interpreter may live in root's home).
    script = (
        "import os; from alert_service.state import open_state;"
        "os.setgid(65534); os.setuid(65534);"
        f"c = open_state({str(state / 'state.sqlite3')!r});"
        "c.execute('BEGIN IMMEDIATE'); c.execute('INSERT INTO probe VALUES (1)');"
        "c.execute('COMMIT')"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO_ROOT)


def test_root_keeps_its_own_database_in_its_own_directory(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    open_state(path).close()
    assert path.stat().st_uid == os.geteuid()


def _config(tmp_path: Path) -> tuple[Path, Path, Path]:
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    secret = etc / "hook-url"
    secret.write_text("https://siem.example/hook\n", encoding="utf-8")
    ioc = etc / "c2.txt"
    ioc.write_text("198.51.100.0/24\n", encoding="utf-8")
    config = etc / "alerts.yaml"
    config.write_text(
        f"""
state_dir: {tmp_path / "state"}
sources: [{{path: {tmp_path / "results.log"}}}]
notifiers: [{{name: hook, type: webhook, url: {{file: {secret}}}}}]
rules:
  - name: c2
    notify: [hook]
    remote_address: {{include_files: [{ioc}]}}
""",
        encoding="utf-8",
    )
    for path in (secret, ioc, config):
        path.chmod(0o600)
    return config, secret, ioc


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alert_service", "check-config", str(config)],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_is_quiet_about_private_files(tmp_path: Path) -> None:
    config, _, _ = _config(tmp_path)
    done = _check(config)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "OK", "")


def test_check_config_warns_about_files_others_can_change(tmp_path: Path) -> None:
    config, secret, ioc = _config(tmp_path)
    secret.chmod(0o666)
    ioc.chmod(0o620)
    config.chmod(0o646)
    done = _check(config)
    assert done.returncode == 0 and done.stdout.strip() == "OK"
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING: ")]
    assert (
        f"WARNING: {secret}: secret is writable by others (mode 0666); run: chmod go-w {secret}"
        in warnings
    )
    assert (
        f"WARNING: {secret}: secret is readable by others (mode 0666); run: chmod o-rwx {secret}"
        in warnings
    )
    assert (
        f"WARNING: {ioc}: IOC list is writable by its group (mode 0620); run: chmod go-w {ioc}"
        in warnings
    )
    assert (
        f"WARNING: {config}: config is writable by others (mode 0646); run: chmod go-w {config}"
        in warnings
    )
    assert len(warnings) == 4


def test_check_config_warns_about_a_directory_others_can_write(tmp_path: Path) -> None:
    config, secret, _ = _config(tmp_path)
    config.parent.chmod(0o777)
    done = _check(config)
    assert done.returncode == 0
    assert f"{secret}: its directory {config.parent} is writable" in done.stderr


def test_check_config_warns_about_a_domain_list_others_can_change(tmp_path: Path) -> None:
    config, _, _ = _config(tmp_path)
    domains = config.parent / "c2-domains.txt"
    domains.write_text("evil.example\n", encoding="utf-8")
    domains.chmod(0o666)
    with open(config, "a", encoding="utf-8") as fh:
        fh.write(f"    any_of: [{{remote_hostname: {{domain_files: [{domains}]}}}}]\n")
    done = _check(config)
    assert done.returncode == 0 and done.stdout.strip() == "OK"
    assert done.stderr.splitlines() == [
        f"WARNING: {domains}: IOC list is writable by others (mode 0666); run: chmod go-w {domains}"
    ]
