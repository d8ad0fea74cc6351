"""Share of short-lived connections osquery logs with the right pid and name.

Usage::

    python benchmarks/fidelity_bench.py [--connections 200] [--lifetimes-ms 300 100]
                                        [--sample-interval-ms N]

The whole chain runs for real: the osqueryd stand-in launches the extension
(a subprocess, over osquery's Thrift protocol) and runs
packs/tracked_connections.conf every 2 s, differential, into a results log.
For each lifetime, the script starts ``--connections`` child processes, a few
at a time; each connects to a listener on 127.0.0.1, holds the connection for
the lifetime, closes it and exits. Afterwards it reads the results log and
counts the children whose connection was logged as ``added`` with the
child's own pid and process name. It prints, per lifetime, the share found
and the share with the right owner; the baseline for comparison is a
plain poll of ``psutil.net_connections`` every 2 s over the same children,
which is what polling netstat every 2 s (the Velociraptor artifact) sees.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from osqueryd_standin import Standin  # noqa: E402

PACK = ROOT / "packs" / "tracked_connections.conf"
CHILD = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print(s.getsockname()[1], flush=True)
time.sleep(float(sys.argv[2]))
s.close()
"""


def accept_forever(server: socket.socket, stop: threading.Event) -> None:
    held: list[socket.socket] = []
    server.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        held.append(conn)
        if len(held) > 64:
            held.pop(0).close()


def poll_psutil(port: int, seen: set[tuple[int, int]], stop: threading.Event) -> None:
    """Baseline: netstat every 2 s, aligned like the osquery schedule."""
    while not stop.is_set():
        time.sleep(2 - time.time() % 2)
        for conn in psutil.net_connections("inet"):
            if conn.raddr and conn.raddr.port == port and conn.pid is not None:
                seen.add((conn.pid, conn.laddr.port))


def run_children(
    port: int, count: int, lifetime_secs: float, parallel: int
) -> list[tuple[int, int]]:
    """Start ``count`` children, ``parallel`` at a time; returns (pid, local port)."""
    done: list[tuple[int, int]] = []
    running: list[subprocess.Popen[bytes]] = []
    started = 0
    while started < count or running:
        while started < count and len(running) < parallel:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(port), str(lifetime_secs)],
                stdout=subprocess.PIPE,
            )
            assert child.stdout is not None
            done.append((child.pid, int(child.stdout.readline())))
            child.stdout.close()
            running.append(child)
            started += 1
        for child in list(running):
            if child.poll() is not None:
                running.remove(child)
        time.sleep(0.01)
    return done


def logged(results_log: Path, port: int) -> dict[int, tuple[str, str]]:
    """local port -> (pid, name) of every 'added' line towards the listener."""
    found: dict[int, tuple[str, str]] = {}
    for raw in results_log.read_text(encoding="utf-8").splitlines():
        line = json.loads(raw)
        cols = line["columns"]
        if line["action"] == "added" and cols.get("remote_port") == str(port):
            found[int(cols["local_port"])] = (cols.get("pid", ""), cols.get("name", ""))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--lifetimes-ms", type=int, nargs="+", default=[300, 100])
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sample-interval-ms", type=int, default=None)
    args = parser.parse_args()

    # What the OS reports as the children's name (comm is the executed file's name).
    child_name = Path(sys.executable).name[:15]
    workdir = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
    ext = [sys.executable, "-m", "extension"]
    if args.sample_interval_ms:
        ext += ["--sample-interval-ms", str(args.sample_interval_ms)]
    try:
        with Standin(
            str(workdir / "osquery.em"),
            workdir / "logs",
            extensions_interval_secs=3,
            ephemeral=True,
        ) as osqd:
            osqd.launch_extension(ext)
            osqd.wait_for_table("tracked_connections", 20)
            (stats,) = osqd.query("SELECT sample_interval_ms FROM tracked_connections_stats")
            osqd.add_pack("tracked_connections", PACK)
            print(
                f"extension sample interval {stats['sample_interval_ms']} ms, pack interval 2 s,"
                f" {args.connections} connections per lifetime, {args.parallel} at a time"
            )
            for lifetime_ms in args.lifetimes_ms:
                server = socket.create_server(("127.0.0.1", 0), backlog=256)
                port = server.getsockname()[1]
                stop = threading.Event()
                baseline: set[tuple[int, int]] = set()
                threads = [
                    threading.Thread(target=accept_forever, args=(server, stop), daemon=True),
                    threading.Thread(target=poll_psutil, args=(port, baseline, stop), daemon=True),
                ]
                for t in threads:
                    t.start()
                children = run_children(port, args.connections, lifetime_ms / 1000, args.parallel)
                time.sleep(12)  # linger plus a few query runs
                stop.set()
                server.close()
                found = logged(osqd.results_log_path, port)
                seen = sum(1 for _, lport in children if lport in found)
                right = sum(
                    1 for pid, lport in children if found.get(lport) == (str(pid), child_name)
                )
                polled = sum(1 for child in children if child in baseline)
                n = len(children)
                print(
                    f"lifetime {lifetime_ms:4d} ms: logged {seen}/{n} ({100 * seen / n:.1f} %),"
                    f" right pid and name {right}/{n} ({100 * right / n:.1f} %);"
                    f" netstat every 2 s: {polled}/{n} ({100 * polled / n:.1f} %)"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
