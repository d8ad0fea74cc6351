"""Share of short-lived connections osquery logs with the right pid and name.

Usage::

    sudo python benchmarks/fidelity_bench.py [--tcp 300] [--refused 200] [--inbound 200]
                                             [--udp 100] [--children 100]

The whole chain runs for real, twice: once with the extension's kernel
events off (``--events off``, sampling alone) and once with them on (the
default where the host allows; needs root). Each time the osqueryd stand-in
launches the extension (a subprocess, over osquery's Thrift protocol) and
runs packs/tracked_connections.conf every 2 s, differential, into a results
log, while this script makes, each kind from a process of its own name:

* ``tcp 1 ms``: outbound TCP connections to a local server, each closed
  about 1 ms after connect (process ``fb_tcp1ms``);
* ``refused``: connect() to bound but not listening ports, answered by RST
  (``fb_refused``); the logged row must also say ``status = refused``;
* ``inbound 1 ms``: the server side of other 1 ms connections, owned by the
  server process (``fb_server``);
* ``udp 5 ms``: connected UDP sockets that send one datagram and close at
  once (``fb_udp``);
* ``child``: forked children that connect once and exit at once
  (``fb_child``).

Then it reads the results log and counts, per kind, the connections logged
as ``added`` with the right pid and process name (found by their own ports
and pids, never by a port alone). Printed: one row per kind, events off
beside events on, from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from osqueryd_standin import Standin  # noqa: E402
from tests.helpers.flows import (  # noqa: E402
    Attempt,
    Server,
    closed_ports,
    forked_connects,
    refused,
    set_comm,
    tcp_short,
    udp_short,
)

PACK = ROOT / "packs" / "tracked_connections.conf"
_WAIT_SECS = 14.0
"""Linger (6 s) plus a few pack runs, and the slower sampling with events on."""


def in_child(name: str, work: Callable[[], list[Attempt]]) -> list[Attempt]:
    """Run ``work`` in a forked child named ``name``; its attempts come back as JSON."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            set_comm(name)
            payload = json.dumps([dataclasses.asdict(a) for a in work()])
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(payload)
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"load process {name} failed")
    return [Attempt(**item) for item in json.loads(data)]


def added_rows(results_log: Path) -> list[dict[str, str]]:
    rows = []
    for raw in results_log.read_text(encoding="utf-8").splitlines():
        line = json.loads(raw)
        if line.get("action") == "added":
            rows.append(line["columns"])
    return rows


def score(rows: list[dict[str, str]], truth: dict[str, list[Attempt]], server: Server,
          ) -> dict[str, tuple[int, int]]:  # fmt: skip
    """kind -> (right pid and name, total)."""
    by_ports: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    by_remote: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in rows:
        key = (row.get("protocol", ""), row.get("local_port", ""), row.get("remote_port", ""))
        by_ports.setdefault(key, []).append(row)
        by_remote.setdefault((row.get("protocol", ""), row.get("remote_port", "")), []).append(row)

    def right(candidates: list[dict[str, str]], pid: int, name: str, **extra: str) -> bool:
        return any(
            r.get("pid") == str(pid)
            and r.get("name") == name
            and all(r.get(k) == v for k, v in extra.items())
            for r in candidates
        )

    out: dict[str, tuple[int, int]] = {}
    for kind, attempts in truth.items():
        good = 0
        for a in attempts:
            if kind == "inbound 1 ms":
                found = by_ports.get(("6", str(server.port), str(a.local_port)), [])
                good += right(found, server.pid, server.name)
            elif kind == "refused":
                found = by_remote.get(("6", str(a.remote_port)), [])
                good += right(found, a.pid, a.name, status="refused")
            else:
                found = by_ports.get((str(a.protocol), str(a.local_port), str(a.remote_port)), [])
                good += right(found, a.pid, a.name)
        out[kind] = (good, len(attempts))
    return out


def run(mode: str, args: argparse.Namespace) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    workdir = Path(tempfile.mkdtemp(prefix="tcf", dir="/tmp"))
    ext = [sys.executable, "-m", "extension", "--events", mode]
    ext += ["--state-file", str(workdir / "extension.state")]
    try:
        with Standin(
            str(workdir / "osquery.em"),
            workdir / "logs",
            extensions_interval_secs=3,
            ephemeral=True,
        ) as osqd:
            osqd.launch_extension(ext)
            osqd.wait_for_table("tracked_connections", 20)
            osqd.add_pack("tracked_connections", PACK)
            time.sleep(1.0)
            with Server("fb_server") as server, contextlib.ExitStack() as stack:
                closed = stack.enter_context(closed_ports(args.refused))
                truth = {
                    "tcp 1 ms": in_child("fb_tcp1ms", lambda: tcp_short(server.port, args.tcp)),
                    "refused": in_child("fb_refused", lambda: refused(closed)),
                    "inbound 1 ms": in_child(
                        "fb_inbound", lambda: tcp_short(server.port, args.inbound)
                    ),
                    "udp 5 ms": in_child("fb_udp", lambda: udp_short(server.port, args.udp)),
                    "child": in_child(
                        "fb_parent",
                        lambda: forked_connects(server.port, args.children, "fb_child"),
                    ),
                }
                time.sleep(_WAIT_SECS)
                (stats,) = osqd.query(
                    "SELECT source, events_off_reason, events_read, events_lost, "
                    "sample_interval_ms FROM tracked_connections_stats"
                )
                return score(added_rows(osqd.results_log_path), truth, server), stats
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tcp", type=int, default=300)
    parser.add_argument("--refused", type=int, default=200)
    parser.add_argument("--inbound", type=int, default=200)
    parser.add_argument("--udp", type=int, default=100)
    parser.add_argument("--children", type=int, default=100)
    args = parser.parse_args()
    results = {}
    for mode in ("off", "on"):
        results[mode], stats = run(mode, args)
        print(
            f"events {mode}: source {stats['source']}, sample interval"
            f" {stats['sample_interval_ms']} ms, events read {stats['events_read']},"
            f" lost {stats['events_lost']}"
            + (f", off because: {stats['events_off_reason']}" if stats["events_off_reason"] else "")
        )
    print()
    print("| kind | connections | events off | events on |")
    print("|---|---|---|---|")
    for kind, (_, total) in results["off"].items():
        cells = []
        for mode in ("off", "on"):
            good, n = results[mode][kind]
            cells.append(f"{100 * good / n:.1f} % ({good})")
        print(f"| {kind} | {total} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
