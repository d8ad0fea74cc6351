"""``tracked-connections-install-extension``: the launcher it writes obeys osqueryd's autoload
rules, runs, and lets the stand-in launch and query the extension.

Rules checked on the real file (upstream osquery 5.23,
osquery/extensions/extensions.cpp ``isFileSafe``, osquery/filesystem/posix/fileops.cpp):
name ends in ``.ext``; parent directory without the sticky bit; owned by root (or
osqueryd's user); owner-executable; not world-writable. And what osquery does not check:
the interpreter the launcher runs, its virtual environment and its ``sys.path`` must be
owned by root and not writable by group or others (checked with real virtual
environments whose modes are loosened).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extension.install import (
    InstallError,
    add_to_autoload,
    autoload_lines,
    autoload_problems,
    install,
    interpreter_problems,
    launcher_interpreter,
)
from osqueryd_standin import Standin

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory under /tmp (UNIX socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tcd", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extension.install", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
    )


def test_installed_launcher_obeys_the_autoload_rules(short_dir: Path) -> None:
    ext_dir = short_dir / "osquery_extensions"
    load = short_dir / "etc" / "extensions.load"
    done = cli("--dir", str(ext_dir), "--extensions-load", str(load))
    assert done.returncode == 0, done.stderr
    launcher = ext_dir / "tracked_connections.ext"
    assert f"wrote {launcher} (mode 0755)" in done.stdout
    assert f"added to {load}" in done.stdout

    st = launcher.stat()
    assert launcher.name.endswith(".ext")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_mode & stat.S_IXUSR
    assert not st.st_mode & stat.S_IWOTH
    assert st.st_uid == os.geteuid()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, 0)
    assert not ext_dir.stat().st_mode & stat.S_ISVTX
    assert autoload_problems(launcher) == [] or os.geteuid() != 0
    assert autoload_problems(launcher, allowed_uids=(0, os.geteuid())) == []

    text = launcher.read_text(encoding="utf-8")
    assert text.startswith("#!/bin/sh\n")
    assert f'exec {sys.executable} -P -m extension "$@"\n' in text
    assert autoload_lines(load.read_text(encoding="utf-8")) == [str(launcher)]
    assert stat.S_IMODE(load.stat().st_mode) == 0o644


def test_launcher_executes(short_dir: Path) -> None:
    result = install(short_dir / "ext")
    done = subprocess.run(
        [str(result.launcher), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tracked-connections-extension")
    assert "--socket SOCKET" in done.stdout


def test_cwd_cannot_shadow_the_package(short_dir: Path) -> None:
    """osqueryd's working directory must not decide which ``extension`` runs (``-P``)."""
    result = install(short_dir / "ext")
    trap = short_dir / "cwd"
    (trap / "extension").mkdir(parents=True)
    (trap / "extension" / "__main__.py").write_text("raise SystemExit(42)\n", encoding="utf-8")
    done = subprocess.run(
        [str(result.launcher), "--help"], capture_output=True, timeout=60, check=False, cwd=trap
    )
    assert done.returncode == 0


def test_autoload_file_is_appended_once_and_keeps_other_lines(short_dir: Path) -> None:
    load = short_dir / "extensions.load"
    load.write_text("# managed by config management\n/opt/other/other.ext", encoding="utf-8")
    first = install(short_dir / "ext", extensions_load=load)
    second = install(short_dir / "ext", extensions_load=load)
    assert (first.autoload_added, second.autoload_added) == (True, False)
    assert load.read_text(encoding="utf-8") == (
        f"# managed by config management\n/opt/other/other.ext\n{first.launcher}\n"
    )
    assert add_to_autoload(load, first.launcher) is False


def test_directory_lines_count_as_listed(short_dir: Path) -> None:
    result = install(short_dir / "ext")
    load = short_dir / "extensions.load"
    load.write_text(f"  {short_dir / 'ext'}  \n", encoding="utf-8")
    assert add_to_autoload(load, result.launcher) is False


def test_sticky_directory_is_refused(short_dir: Path) -> None:
    sticky = short_dir / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    done = cli("--dir", str(sticky))
    assert done.returncode == 1
    assert "refusing to install into" in done.stderr
    assert "sticky bit" in done.stderr
    assert list(sticky.iterdir()) == []


def test_name_must_end_in_ext(short_dir: Path) -> None:
    with pytest.raises(InstallError, match=r"ending in \.ext"):
        install(short_dir / "ext", name="tracked_connections.sh")
    done = cli("--dir", str(short_dir / "ext"), "--name", "tracked_connections")
    assert done.returncode == 1 and "ending in .ext" in done.stderr


def test_python_without_the_package_is_refused(short_dir: Path) -> None:
    venv = short_dir / "bare"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    with pytest.raises(InstallError, match="cannot import the extension package"):
        install(short_dir / "ext", python=str(venv / "bin" / "python"))
    assert not (short_dir / "ext").exists()


def test_check_reports_what_osqueryd_would_refuse(short_dir: Path) -> None:
    bad_dir = short_dir / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "tracked_connections.sh"
    bad.write_text("#!/bin/sh\n", encoding="utf-8")
    bad.chmod(0o646)
    problems = autoload_problems(bad, allowed_uids=(12345,))
    assert problems == [
        f"{bad}: name does not end in '.ext'",
        f"{bad}: owned by uid {os.geteuid()}, not by uid 12345",
        f"{bad}: not executable by its owner (mode 0646)",
        f"{bad}: world-writable (mode 0646)",
    ]
    bad_dir.chmod(0o1755)
    assert f"{bad_dir}: directory has the sticky bit (like /tmp); osqueryd refuses it" in (
        autoload_problems(bad)
    )
    done = cli("--check", str(bad))
    assert done.returncode == 1
    assert "world-writable" in done.stderr

    good = install(short_dir / "ext").launcher
    load = short_dir / "extensions.load"
    load.write_text("; nothing listed\n", encoding="utf-8")
    done = cli("--check", str(good), "--osqueryd-uid", str(os.geteuid()))
    assert done.returncode == 0 and done.stdout.startswith("OK: osqueryd would autoload")
    done = cli(
        "--check",
        str(good),
        "--extensions-load",
        str(load),
        "--osqueryd-uid",
        str(os.geteuid()),
    )
    assert done.returncode == 1
    assert f"{load}: does not list {good}" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason=f"no {SYSTEM_PYTHON}")
def test_non_root_install_warns_and_owns_the_file(short_dir: Path) -> None:
    """As an unprivileged user: the file is that user's, with a warning saying so.

    The effective uid is switched in-process. The project's interpreter may live where
    other users cannot reach it (/root), so the launcher points at the system Python
    and the import check is skipped: this test is about ownership, not about running.
    """
    ext_dir = short_dir / "userext"
    ext_dir.mkdir()
    os.chown(ext_dir, NOBODY, NOBODY)
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        result = install(ext_dir, python=SYSTEM_PYTHON, check_python=False)
    finally:
        os.seteuid(0)
        os.setegid(0)
    [warning] = result.warnings
    assert warning.startswith("not running as root")
    assert f"owned by uid {NOBODY}" in warning
    launcher = ext_dir / "tracked_connections.ext"
    assert launcher.stat().st_uid == NOBODY
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    assert autoload_problems(launcher) == [f"{launcher}: owned by uid {NOBODY}, not by uid 0"]
    assert autoload_problems(launcher, allowed_uids=(0, NOBODY)) == []


def test_standin_launches_and_queries_through_the_launcher(short_dir: Path) -> None:
    launcher = install(short_dir / "ext").launcher
    with Standin(
        str(short_dir / "osquery.em"),
        short_dir / "logs",
        host_identifier="web-01",
        extensions_interval_secs=1,
        extensions_timeout_secs=5,
        run_scheduler=False,
        kill_grace_secs=5,
    ) as osqd:
        child = osqd.launch_extension([str(launcher)])
        osqd.wait_for_table("tracked_connections", 30)
        assert "tracked_connections" in osqd.extensions().values()
        rows = osqd.query(
            "SELECT name, path FROM osquery_extensions WHERE name = 'tracked_connections'"
        )
        assert [r["name"] for r in rows] == ["tracked_connections"]
        listener = subprocess.Popen(
            [sys.executable, "-c", LISTENER],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            port = int((listener.stdout or sys.stdin).readline())
            found: list[dict[str, str]] = []
            for _ in range(100):
                found = osqd.query(
                    "SELECT pid, protocol, local_port, direction FROM tracked_connections "
                    f"WHERE local_port = {port} AND protocol = 6"
                )
                if found:
                    break
                time.sleep(0.1)
            assert found and found[0]["pid"] == str(listener.pid)
            assert found[0]["direction"] == "listening"
        finally:
            listener.kill()
            listener.wait()
            if listener.stdout is not None:
                listener.stdout.close()
        assert child.poll() is None
    assert child.wait(timeout=30) is not None


LISTENER = """\
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
time.sleep(60)
"""


def test_cli_module_and_console_script_agree() -> None:
    scripts = REPO / "pyproject.toml"
    assert 'tracked-connections-install-extension = "extension.install:main"' in scripts.read_text(
        encoding="utf-8"
    )
    done = cli("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: tracked-connections-install-extension")
    assert json.dumps("--extensions-load")[1:-1] in done.stdout


# -- the interpreter, its venv and its sys.path ---------------------------------------


def project_venv(parent: Path) -> Path:
    """A real venv under ``parent`` whose Python imports this checkout's package.

    Made with ``venv --without-pip``; a ``.pth`` file puts the project's own
    site-packages (the dependencies) and the checkout on its ``sys.path``, as ``pip
    install`` would. Returns the venv's ``bin/python``.
    """
    venv = parent / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    site_dir = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site_dir) / "project.pth").write_text(
        "\n".join([*ours, str(REPO)]) + "\n", encoding="utf-8"
    )
    return python


def site_packages(python: Path) -> Path:
    return next((python.parent.parent / "lib").glob("python3*/site-packages"))


def test_a_sound_venv_passes(short_dir: Path) -> None:
    python = project_venv(short_dir)
    assert interpreter_problems(str(python)) == []
    result = install(short_dir / "ext", python=str(python))
    assert not [w for w in result.warnings if w.startswith("--force")]
    assert launcher_interpreter(result.launcher) == str(python)


def test_group_writable_site_packages_is_refused_unless_forced(short_dir: Path) -> None:
    python = project_venv(short_dir)
    site = site_packages(python)
    site.chmod(0o775)
    problem = f"{site}: writable by group or others (mode 0775)"
    assert problem in interpreter_problems(str(python))

    done = cli("--dir", str(short_dir / "ext"), "--python", str(python))
    assert done.returncode == 1
    assert f"error: refusing {python}: osqueryd would run it as root" in done.stderr
    assert problem in done.stderr
    assert not (short_dir / "ext" / "tracked_connections.ext").exists()

    done = cli("--dir", str(short_dir / "ext"), "--python", str(python), "--force")
    assert done.returncode == 0, done.stderr
    assert f"warning: --force: {problem}" in done.stderr
    launcher = short_dir / "ext" / "tracked_connections.ext"
    assert launcher.is_file()

    done = cli("--check", str(launcher))
    assert done.returncode == 1
    assert problem in done.stderr.splitlines()


def test_world_writable_file_deep_in_the_venv_is_found(short_dir: Path) -> None:
    python = project_venv(short_dir)
    planted = site_packages(python) / "sitecustomize.py"
    planted.write_text("# anyone could put code here\n", encoding="utf-8")
    planted.chmod(0o666)
    assert f"{planted}: writable by group or others (mode 0666)" in interpreter_problems(
        str(python)
    )
    with pytest.raises(InstallError, match="refusing"):
        install(short_dir / "ext", python=str(python))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_venv_owned_by_another_user_is_refused(short_dir: Path) -> None:
    python = project_venv(short_dir)
    venv = python.parent.parent
    os.chown(venv, NOBODY, NOBODY)
    problems = interpreter_problems(str(python))
    assert f"{venv}: owned by uid {NOBODY}, not by uid 0" in problems
    # osqueryd running as that user may own it: --osqueryd-uid says so.
    assert interpreter_problems(str(python), (0, NOBODY)) == []


def test_writable_ancestor_and_interpreter_are_refused_without_running_it(
    short_dir: Path,
) -> None:
    python = project_venv(short_dir)
    short_dir.chmod(0o777)  # no sticky bit: anyone may rename the venv away
    problems = interpreter_problems(str(python))
    assert f"{short_dir}: writable by group or others (mode 0777)" in problems
    short_dir.chmod(0o1777)  # sticky, like /tmp: entries are safe from others
    assert interpreter_problems(str(python)) == []
    short_dir.chmod(0o755)

    marker = short_dir / "ran"
    fake = short_dir / "python"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\n", encoding="utf-8")
    fake.chmod(0o777)
    problems = interpreter_problems(str(fake))
    assert problems == [f"{fake}: writable by group or others (mode 0777)"]
    with pytest.raises(InstallError, match="refusing"):
        install(short_dir / "ext", python=str(fake))
    assert not marker.exists(), "an interpreter others can change must not be run"


def test_check_cannot_vouch_for_a_foreign_launcher(short_dir: Path) -> None:
    foreign = short_dir / "other.ext"
    foreign.write_text("#!/bin/sh\nexec /usr/bin/other-extension \"$@\"\n", encoding="utf-8")
    foreign.chmod(0o755)
    assert launcher_interpreter(foreign) is None
    done = cli("--check", str(foreign), "--osqueryd-uid", str(os.geteuid()))
    assert done.returncode == 1
    assert "cannot tell which Python it runs" in done.stderr
