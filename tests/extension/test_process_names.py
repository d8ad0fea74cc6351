"""Process names longer than the kernel's 15 characters come out whole."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
from pathlib import Path

from extension.collect.normalize import full_process_name
from extension.enrich.process import ProcessTracker
from tests.helpers.osqueryd import short_tmpdir, standin_with_extension
from tests.helpers.procs import finish, wait_for

LONG = "tracked-connections-test-client"


def test_names_the_kernel_cut_are_made_whole() -> None:
    assert full_process_name("tracked-connect", "/usr/bin/python3.11",
                             ["/usr/bin/python3", "/opt/x/tracked-connections-extension"]
                             ) == "tracked-connections-extension"  # fmt: skip
    assert full_process_name("tracked-connect", "/opt/tracked-connections-extension", []) == (
        "tracked-connections-extension"
    )
    assert full_process_name("nginx", "/usr/sbin/nginx", ["nginx: worker"]) == "nginx"
    assert full_process_name("kworker/0:1-eve", None, []) == "kworker/0:1-eve"
    assert full_process_name("abcdefghijklmno", "/x/abcdefghijklmnoXYZ", []) == (
        "abcdefghijklmnoXYZ"
    )
    assert full_process_name("abcdefghijklmno", "/x/zzz", ["/y/other"]) == "abcdefghijklmno"


def _script(directory: Path) -> Path:
    script = directory / LONG
    script.write_text(
        f"#!{sys.executable}\n"
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        "print(s.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n",
        encoding="utf-8",
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_a_script_with_a_long_name_is_named_whole() -> None:
    with short_tmpdir() as workdir, socket.create_server(("127.0.0.1", 0)) as server:
        child = subprocess.Popen([str(_script(workdir)), str(server.getsockname()[1])],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert child.stdout is not None
            child.stdout.readline()
            with open(f"/proc/{child.pid}/comm", encoding="utf-8") as f:
                assert f.read().strip() == LONG[:15], "the kernel cuts it"
            info = ProcessTracker().lookup(child.pid)
            assert info.name == LONG
        finally:
            finish(child)


def test_the_row_names_it_whole_through_osquery() -> None:
    with (
        short_tmpdir() as workdir,
        socket.create_server(("127.0.0.1", 0)) as server,
        standin_with_extension(workdir) as osqd,
    ):
        child = subprocess.Popen([str(_script(workdir)), str(server.getsockname()[1])],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert child.stdout is not None
            local_port = int(child.stdout.readline())
            sql = f"SELECT name FROM tracked_connections WHERE pid = {child.pid}" \
                  f" AND local_port = {local_port}"  # fmt: skip
            wait_for(lambda: bool(osqd.query(sql)), timeout_secs=60, interval_secs=0.5)
            assert osqd.query(sql) == [{"name": LONG}]
        finally:
            finish(child)
