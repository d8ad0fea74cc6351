"""How often remote_hostname is right: lookups and connections against real DNS answers.

Usage::

    python benchmarks/dns_names_bench.py                 # about 1 minute, as root
    python benchmarks/dns_names_bench.py --workers 1 --events off

In a network namespace made for the run (``ip netns add``; 192.0.2.0/24 is
made local there, so connections to it are answered), a DNS server
(dnspython, ``tests/helpers/dns_server.py``) answers ``--names`` names
(default 100) spread over ``--addresses`` addresses (default 50: two names
share each address, so only the right answer gives the right name). The
osqueryd stand-in launches the extension (``--events`` as given). Then
``--workers`` processes (default 10) run at once in the namespace; each
does ``--lookups / --workers`` rounds of: glibc ``getaddrinfo`` of a name
drawn at random (seeded), a TCP connection to the address it gave, held
open. Once the table shows every connection (found by pid and socket
inode), the share of rows whose ``remote_hostname`` is the name the
process asked for just before is printed, with the evidence
(``remote_hostname_source``) and how long the rows took. Target: 99 % or
more at 1,000 lookups and connections to 100 names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osqueryd_standin import Standin
from tests.helpers.dns_server import dns_server
from tests.helpers.privileges import network_namespace

_CONNECT = r"""
import json, os, socket, sys
plan = json.loads(sys.argv[1])
listener = socket.create_server(("0.0.0.0", 0), backlog=4096)
port = listener.getsockname()[1]
held, out = [], []
for name in plan:
    address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    sock = socket.create_connection((address, port))
    held.append(sock)
    out.append([name, address, os.fstat(sock.fileno()).st_ino])
print(json.dumps([os.getpid(), out]), flush=True)
sys.stdin.read()
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--lookups", type=int, default=1000, help="lookups + connections")
    parser.add_argument("--names", type=int, default=100, help="distinct names")
    parser.add_argument("--addresses", type=int, default=50, help="distinct addresses")
    parser.add_argument("--workers", type=int, default=10, help="processes at once")
    parser.add_argument("--events", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, packet sockets)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    names: dict[str, list[str] | str] = {
        f"host{n}.names-bench.example": [f"192.0.2.{10 + n % args.addresses}"]
        for n in range(args.names)
    }
    pool = sorted(names)
    per = args.lookups // args.workers
    plans = [[rng.choice(pool) for _ in range(per)] for _ in range(args.workers)]
    with network_namespace() as netns:
        ip = ["ip", "netns", "exec", netns, "ip"]
        subprocess.run([*ip, "route", "add", "local", "192.0.2.0/24", "dev", "lo"], check=True)
        conf = Path("/etc/netns") / netns
        conf.mkdir(parents=True)
        workdir = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
        try:
            with dns_server(names, netns=netns) as server:
                (conf / "resolv.conf").write_text(f"nameserver {server}\n", encoding="utf-8")
                return _run(args, netns, plans, workdir)
        finally:
            shutil.rmtree(conf, ignore_errors=True)
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):
                Path("/etc/netns").rmdir()


def _run(args: argparse.Namespace, netns: str, plans: list[list[str]], workdir: Path) -> int:
    osqd = Standin(
        str(workdir / "osquery.em"),
        workdir / "logs",
        host_identifier="bench",
        extensions_interval_secs=3,
        extensions_timeout_secs=10,
        ephemeral=True,
    )
    children: list[subprocess.Popen[bytes]] = []
    try:
        osqd.start()
        osqd.launch_extension(
            [sys.executable, "-m", "extension", "--events", args.events,
             "--state-file", str(workdir / "ext.state")],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        osqd.wait_for_table("tracked_connections", 20)
        (stats,) = osqd.query("SELECT source, dns, dns_off_reason FROM tracked_connections_stats")
        started = time.monotonic()
        for plan in plans:
            children.append(subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-c", _CONNECT, json.dumps(plan)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE))  # fmt: skip
        expected: dict[int, tuple[int, str]] = {}
        for child in children:
            assert child.stdout is not None
            pid, made = json.loads(child.stdout.readline())
            for name, _address, inode in made:
                expected[inode] = (pid, name)
        made_secs = time.monotonic() - started
        rows: dict[int, dict[str, str]] = {}
        deadline = time.monotonic() + 120
        pids = ", ".join(str(p) for p in {pid for pid, _ in expected.values()})
        while len(rows) < len(expected) and time.monotonic() < deadline:
            for row in osqd.query(
                "SELECT pid, socket, remote_hostname, remote_hostname_source"
                f" FROM tracked_connections WHERE pid IN ({pids})"
            ):
                inode = int(row.get("socket") or 0)
                if inode in expected and str(expected[inode][0]) == row.get("pid"):
                    rows[inode] = row
            time.sleep(0.5)
        shown_secs = time.monotonic() - started
        (after,) = osqd.query(
            "SELECT dns_packets_read, dns_answers_parsed, dns_packets_dropped, dns_cache_size"
            " FROM tracked_connections_stats"
        )
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)
        osqd.stop()
    right = sum(1 for i, row in rows.items() if row.get("remote_hostname") == expected[i][1])
    sources = Counter(row.get("remote_hostname_source", "(none)") for row in rows.values())
    wrong = Counter(
        (expected[inode][1], row.get("remote_hostname", "(none)"),
         row.get("remote_hostname_source", "(none)"))
        for inode, row in rows.items()
        if row.get("remote_hostname") != expected[inode][1]
    )
    total = len(expected)
    print(
        f"{total} lookups + connections by {args.workers} processes at once, {args.names} names"
        f" on {args.addresses} addresses; extension source {stats['source']}, dns {stats['dns']}"
        f" {stats['dns_off_reason']}"
    )
    print(f"  made in {made_secs:.1f} s; all rows shown after {shown_secs:.1f} s;"
          f" rows found {len(rows)} of {total}")  # fmt: skip
    print(f"  right name: {right} of {total} = {right / total:.2%} (target: 99 % or more)")
    print(f"  evidence: {dict(sources)}; stats: {after}")
    if wrong:
        print(f"  wrong (asked, shown, evidence) most common: {wrong.most_common(5)}")
    return 0 if right >= 0.99 * total else 1


if __name__ == "__main__":
    raise SystemExit(main())
