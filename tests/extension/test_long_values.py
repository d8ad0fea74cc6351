"""A process that pads its own name, path or arguments cannot make its row too
large to keep: every text it controls is cut, with a visible marker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from extension.collect import select_collector
from extension.columns import MAX_TEXT, TRUNCATION_MARKER
from extension.enrich.connections import ConnectionTracker
from extension.model import ProcessInfo, SocketRecord
from extension.sampler import Sampler
from extension.serve.table import TrackedConnectionsTable
from tests.helpers.osqueryd import short_tmpdir
from tests.helpers.procs import finish, wait_for

HUGE = "\x01" * 130_000


def test_every_text_a_process_controls_is_cut_with_a_marker() -> None:
    process = ProcessInfo(name=HUGE, path="/" + HUGE, cmdline=HUGE, uid=0, username=HUGE,
                          parent=1, parent_name=HUGE, parent_path="/" + HUGE)  # fmt: skip
    tracker = ConnectionTracker(lambda pid: process)
    tracker.update([SocketRecord(7, 2, 6, "10.0.0.5", 5000, "203.0.113.9", 443,
                                 "ESTABLISHED", 99, 1)], now=100.0)  # fmt: skip
    (row,) = tracker.rows(100.1)
    for column, most in MAX_TEXT.items():
        if column in row:
            assert len(row[column]) == most and row[column].endswith(TRUNCATION_MARKER), column
    assert sum(len(v) for v in row.values()) < 20_000


def test_a_real_process_with_a_huge_argv0_has_a_bounded_row() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    with short_tmpdir() as workdir, socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        link = workdir / ("\x01" * 200)  # the kernel names the process after its first 15
        os.symlink(bash, link)
        script = f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo connected; read line"
        child = subprocess.Popen([HUGE, "-c", script], executable=str(link),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"connected\n"
            sampler = Sampler(select_collector())
            table = TrackedConnectionsTable(sampler)

            def mine() -> list[dict[str, str]]:
                sampler.sample_once()
                pid, remote = str(child.pid), str(port)
                rows = table.generate({})
                return [r for r in rows if r.get("pid") == pid and r.get("remote_port") == remote]

            wait_for(lambda: bool(mine()))
            (row,) = mine()
        finally:
            finish(child)
    assert len(row["name"]) <= MAX_TEXT["name"] and row["name"].endswith(TRUNCATION_MARKER)
    assert len(row["cmdline"]) <= MAX_TEXT["cmdline"]
