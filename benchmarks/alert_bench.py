"""Benchmark the alert path: ``replay`` as a whole process against the read + JSON floor.

Usage::

    python benchmarks/alert_bench.py                      # 300k lines, 3 runs each
    python benchmarks/alert_bench.py --lines 30000 --runs 1   # a quick look

Every figure is measured in the same run, on the same machine, and the ratios are
taken against the floor of that run. Times are medians of ``--runs`` runs.

1. Input: ``--lines`` result lines (default 300 000) of about 740 bytes, as osqueryd's
   filesystem logger writes a differential query of the ``tracked_connections`` pack
   (event form, compact JSON, every column as text; osquery 5.x
   plugins/logger/filesystem_logger.cpp): half ``added``, half ``removed`` (each
   removed row is a row added earlier), ``counter`` > 0, from ``--hosts`` hosts, IPv4
   and IPv6 peers. About 1 % of the added rows have a peer on the IOC list.
2. Rule sets, each with one rule whose ``remote_address.include_files`` is an IOC list
   of ``--iocs`` entries (default 10 000): **1 rule** (that rule alone), **10 rules**
   and **100 rules** (that rule plus per-team rules as a deployment has them: ports
   and port ranges, process names and paths, cmdline regexes and globs, uid ranges,
   inline CIDR lists, directions, some on ``removed`` too, most with ``exclude``
   entries for known services).
3. ``floor``: a Python process that reads the file line by line and calls
   ``orjson.loads`` on each line — the least any JSON-lines reader in Python does.
4. ``replay``: ``python -m alert_service replay CONFIG LOG`` as a whole process
   (start, config, IOC load, read, parse, match, baseline, alerts printed to a file),
   from compiled bytecode as an installed package runs (cached by an untimed first
   run; ``PYTHONDONTWRITEBYTECODE`` is not passed on).
5. In-process, one run: ``orjson.loads`` alone against
   :func:`~alert_service.parse.parse_line` over the same lines (the parse stage's
   share of the floor), and :meth:`RuleSet.match` per rule set.

Targets (issue 18): ``replay`` with 1 rule within 3x the floor; 100 rules at most 2x
1 rule. The script prints whether each is met, in wall time and in CPU time (user +
system of each process, which the host's other load inflates far less).

Aggregation rules (issue 15): ``--aggregation`` prints instead the throughput with 10
aggregation rules beside the row rules alone, measured in the same rounds (the
section lives in benchmarks/ingest_bench.py, ``--aggregation-only``; this flag runs
it with ``--lines`` and ``--runs``). Target: >= 70 % of the row-only figure.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from alert_service.config import load_config  # noqa: E402
from alert_service.match import RuleSet  # noqa: E402
from alert_service.parse import parse_line  # noqa: E402

PROCESSES = [
    ("curl", "/usr/bin/curl", "curl -fsSL https://example.com/install.sh"),
    ("python3", "/usr/bin/python3.11", "python3 -m http.client"),
    ("sshd", "/usr/sbin/sshd", "sshd: alice [priv]"),
    ("chrome", "/opt/google/chrome/chrome", "/opt/google/chrome/chrome --type=utility"),
    ("nginx", "/usr/sbin/nginx", "nginx: worker process"),
    ("postgres", "/usr/lib/postgresql/16/bin/postgres", "postgres: walsender"),
    ("java", "/usr/lib/jvm/java-17/bin/java", "java -jar /opt/app/service.jar --port 8080"),
]
PORTS = [443, 80, 53, 22, 8443, 5432, 3306, 9200, 6379, 8080]

FLOOR = """
import sys, orjson
loads = orjson.loads
with open(sys.argv[1], "rb") as fh:
    for line in fh:
        loads(line)
"""


def make_iocs(rnd: random.Random, count: int) -> list[str]:
    """``count`` distinct entries: 70 % IPv4 addresses, 25 % IPv4 CIDRs, 5 % IPv6 /48."""
    out: set[str] = set()
    while len(out) < count:
        roll = rnd.random()
        if roll < 0.7:
            out.add(str(ipaddress.IPv4Address(rnd.getrandbits(32))))
        elif roll < 0.95:
            prefix = rnd.randint(20, 30)
            base = rnd.getrandbits(32) & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
            out.add(str(ipaddress.IPv4Network((base, prefix))))
        else:
            base = (0x2001_0DB8 << 96 | rnd.getrandbits(96)) >> 80 << 80
            out.add(str(ipaddress.IPv6Network((base, 48))))
    return sorted(out)


def make_row(
    rnd: random.Random, t0: int, i: int, iocs: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> dict[str, str]:
    if rnd.random() < 0.01:
        net = rnd.choice(iocs)
        remote = str(net.network_address + rnd.randrange(min(net.num_addresses, 1 << 16)))
        family = "2" if net.version == 4 else "10"
    elif rnd.random() < 0.85:
        remote = str(ipaddress.IPv4Address(rnd.getrandbits(32)))
        family = "2"
    else:
        remote = str(ipaddress.IPv6Address(0x2A00 << 112 | rnd.getrandbits(112)))
        family = "10"
    name, path, cmdline = rnd.choice(PROCESSES)
    pid = rnd.randint(300, 99999)
    return {
        "cmdline": cmdline,
        "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "direction": rnd.choice(["outbound"] * 8 + ["inbound", "listening"]),
        "family": family,
        "first_seen": str(t0 + i // 50 - 3),
        "local_address": "10.1.2.3" if family == "2" else "fd00::3",
        "local_port": str(rnd.randint(32768, 60999)),
        "name": name,
        "net_namespace": "4026531840",
        "parent": str(pid - 1),
        "parent_name": "bash",
        "parent_path": "/usr/bin/bash",
        "path": path,
        "pid": str(pid),
        "protocol": "6",
        "remote_address": remote,
        "remote_port": str(rnd.choice(PORTS)),
        "socket": str(rnd.randint(10000, 9999999)),
        "start_time": str(t0 - rnd.randint(0, 86400)),
        "state": "ESTABLISHED",
        "uid": str(rnd.choice([0, 33, 1000, 1001, 999])),
        "username": "alice",
    }


def make_lines(rnd: random.Random, count: int, hosts: int, iocs: list[str]) -> list[bytes]:
    """``count`` event lines (newline included): added and removed alternate."""
    nets = [ipaddress.ip_network(n) for n in iocs]
    t0 = 1756796709
    open_rows: list[tuple[str, dict[str, str]]] = []
    lines: list[bytes] = []
    for i in range(count):
        removing = i % 2 == 1 and open_rows
        if removing:
            host, columns = open_rows.pop(rnd.randrange(len(open_rows)))
            action = "removed"
        else:
            host = f"host-{rnd.randrange(hosts):04d}.example.com"
            columns = make_row(rnd, t0, i, nets)
            open_rows.append((host, columns))
            action = "added"
        doc = {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": host,
            "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
            "unixTime": t0 + i // 50,
            "epoch": 0,
            "counter": 1 + i // 50,
            "numerics": False,
            "columns": columns,
            "action": action,
        }
        lines.append(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
    return lines


def team_rule(rnd: random.Random, i: int) -> dict[str, Any]:
    """One of the ordinary rules of a deployment (rule ``i``)."""
    kind = i % 7
    rule: dict[str, Any] = {"name": f"team-{i}", "notify": ["local"]}
    if kind == 0:
        rule["remote_port"] = [rnd.randint(1024, 65535), f"{4000 + i}-{4010 + i}"]
    elif kind == 1:
        rule["process"] = {"name": {"exact": [f"agent-{i}", f"miner-{i}"]}}
        rule["exclude"] = [{"process": {"path": {"glob": ["/opt/approved/*"]}}}]
    elif kind == 2:
        rule["process"] = {
            "cmdline": {"regex": [f"nc -e /bin/sh .*{i}", f"bash -i >& /dev/tcp/.*:{i}"]}
        }
    elif kind == 3:
        rule["remote_address"] = {
            "include": [f"100.{i % 250}.0.0/16", f"2001:db8:{i:x}::/48"],
            "exclude": [f"100.{i % 250}.1.0/24"],
        }
        rule["direction"] = ["outbound"]
    elif kind == 4:
        rule["user"] = {"uid": [f"{20000 + i}-{20099 + i}"]}
        rule["remote_port"] = [22, 3389]
        rule["exclude"] = [{"process": {"name": {"exact": ["sshd"]}}}]
    elif kind == 5:
        rule["actions"] = ["added", "removed"]
        rule["process"] = {"path": {"glob": [f"/tmp/{i}/*", f"/dev/shm/x{i}*"]}}
    else:
        rule["remote_port"] = [6660 + i % 10]
        rule["process"] = {"name": {"exact": [f"irc-{i}"]}}
        rule["exclude"] = [{"host": {"glob": ["build-*"]}}]
    return rule


def make_config(tmp: str, ioc_path: str, rules: int, seed: int) -> str:
    rnd = random.Random(seed)
    items: list[dict[str, Any]] = [
        {"name": "ioc", "notify": ["local"], "remote_address": {"include_files": [ioc_path]}}
    ]
    items += [team_rule(rnd, i) for i in range(1, rules)]
    doc = {
        "state_dir": os.path.join(tmp, f"state-{rules}"),
        "sources": [{"path": "/nonexistent", "start_at": "beginning"}],
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": items,
    }
    path = os.path.join(tmp, f"rules-{rules}.yaml")
    Path(path).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


def process_env(tmp: str) -> dict[str, str]:
    """The environment of the timed processes: bytecode cached in ``tmp``.

    An installed package runs from compiled bytecode (pip compiles it); a source tree
    with ``PYTHONDONTWRITEBYTECODE`` set would compile every module at each start
    (about 0.15 s for ``replay``). So bytecode is written to a private cache, filled by
    an untimed first run.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
    return env


def timed_process(
    argv: list[str], out: str, cwd: str | None = None, env: dict[str, str] | None = None
) -> float:
    """Run ``argv`` to completion in ``cwd`` (stdout to ``out``); wall seconds.

    The process's CPU seconds (user + system) are appended to :data:`CPU_SECS`.
    """
    with open(out, "wb") as fh:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, stdout=fh, stderr=subprocess.DEVNULL, check=True, cwd=cwd, env=env)
        took = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_SECS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return took


CPU_SECS: list[float] = []
"""CPU seconds of each process :func:`timed_process` ran, in order."""


def cpu_report(
    floors: list[float], times: dict[int, list[float]], other: dict[int, list[float]], tree: str
) -> None:
    """The same rounds in CPU time (user + system of each process).

    On a shared host a process waits for a core as long as the others keep it busy,
    so wall times and their ratios move with the load; the CPU a process used moves
    far less. Printed beside the wall figures, with the targets on both.
    """
    print(
        f"\n  CPU time (user + system), floor: {statistics.median(floors):.2f} s"
        f" (runs {', '.join(f'{x:.2f}' for x in floors)})"
    )
    ratios: dict[int, float] = {}
    for label, table in (("", times), (f"{tree}: ", other)):
        for count, ts in table.items():
            if not ts:
                continue
            ratio = statistics.median(t / f for t, f in zip(ts, floors, strict=True))
            if not label:
                ratios[count] = ratio
            print(
                f"  {label}CPU, replay, {count:>3} rules: {statistics.median(ts):6.2f} s"
                f"  {ratio:5.2f}x floor (runs {', '.join(f'{x:.2f}' for x in ts)})"
            )
    if 1 in ratios:
        print(
            f"  target in CPU time, replay(1 rule) <= 3x floor: {ratios[1]:.2f}x,"
            f" {'met' if ratios[1] <= 3 else 'NOT met'}"
        )
    if 1 in times and 100 in times:
        per_round = statistics.median(a / b for a, b in zip(times[100], times[1], strict=True))
        print(
            f"  target in CPU time, replay(100 rules) <= 2x replay(1 rule): {per_round:.2f}x,"
            f" {'met' if per_round <= 2 else 'NOT met'}"
        )


def in_process(lines: list[bytes], configs: dict[int, str]) -> None:
    """The parse stage against orjson alone, and matching per rule set (one run)."""
    raw = [line.rstrip(b"\n") for line in lines]
    loads = orjson.loads
    start = time.perf_counter()
    for line in raw:
        loads(line)
    floor = time.perf_counter() - start
    packs = frozenset({"tracked_connections"})
    start = time.perf_counter()
    for line in raw:
        parse_line(line, packs)
    parse = time.perf_counter() - start
    events = [e for line in raw for e in parse_line(line, packs)]
    gc.freeze()  # the kept events are not traversed by every collection
    n = len(raw)
    print(
        f"  in-process: orjson.loads {floor * 1e6 / n:.2f} µs/line, parse_line"
        f" {parse * 1e6 / n:.2f} µs/line ({parse / floor:.2f}x orjson)"
    )
    for count, path in configs.items():
        rules = RuleSet(load_config(path).rules)
        match = rules.match
        as_added = rules.matches_as
        start = time.perf_counter()
        for event in events:
            match(event)
            if event.action == "removed":
                as_added(event, "added")
        took = time.perf_counter() - start
        print(f"  in-process: match, {count:>3} rules: {took * 1e6 / n:.2f} µs/event")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--lines", type=int, default=300_000, help="input lines")
    parser.add_argument("--iocs", type=int, default=10_000, help="IOC list entries")
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--rules", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--compare-tree",
        metavar="DIR",
        help="also replay with the alert_service package found in DIR (e.g. an export of"
        " an earlier commit), in the same rounds",
    )
    parser.add_argument(
        "--aggregation",
        action="store_true",
        help="print the aggregation-rule throughput (ingest_bench.py --aggregation-only)",
    )
    args = parser.parse_args(argv)
    if args.aggregation:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from ingest_bench import main as ingest_main  # noqa: PLC0415 - only for this flag

        return ingest_main(
            ["--aggregation-only", "--lines", str(args.lines), "--runs", str(args.runs)]
        )

    rnd = random.Random(args.seed)
    iocs = make_iocs(rnd, args.iocs)
    lines = make_lines(rnd, args.lines, args.hosts, iocs)
    size = sum(len(line) for line in lines)
    load = os.getloadavg()
    print(
        f"alert_bench: {args.lines} lines ({size / args.lines:.0f} B/line, half added, half"
        f" removed), IOC list {len(iocs)} entries, median of {args.runs};"
        f" python {sys.version.split()[0]}, {os.cpu_count()} cores,"
        f" load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="alert_bench.") as tmp:
        log = os.path.join(tmp, "osqueryd.results.log")
        with open(log, "wb") as fh:
            fh.writelines(lines)
        ioc_path = os.path.join(tmp, "iocs.txt")
        Path(ioc_path).write_text("\n".join(iocs) + "\n", encoding="utf-8")
        configs = {n: make_config(tmp, ioc_path, n, args.seed) for n in args.rules}
        out = os.path.join(tmp, "alerts.jsonl")
        env_python = sys.executable
        env = process_env(tmp)
        empty = os.path.join(tmp, "empty.log")
        Path(empty).touch()
        # Untimed: fill the bytecode cache (both trees), and the page cache.
        timed_process([env_python, "-c", FLOOR, log], os.devnull, env=env)
        for tree in filter(None, [str(REPO), args.compare_tree]):
            argv_ = [env_python, "-m", "alert_service", "replay", configs[min(configs)], empty]
            timed_process(argv_, os.devnull, cwd=tree, env=env)

        # Rounds: the floor, then each rule set; under a changing load every ratio is
        # taken within one round, and the medians are reported.
        floors: list[float] = []
        times: dict[int, list[float]] = {n: [] for n in configs}
        other: dict[int, list[float]] = {n: [] for n in configs}
        cpu_floors: list[float] = []
        cpu_times: dict[int, list[float]] = {n: [] for n in configs}
        cpu_other: dict[int, list[float]] = {n: [] for n in configs}
        alerts: dict[int, int] = {}
        for _ in range(args.runs):
            floors.append(timed_process([env_python, "-c", FLOOR, log], os.devnull, env=env))
            cpu_floors.append(CPU_SECS[-1])
            for count, config in configs.items():
                argv_ = [env_python, "-m", "alert_service", "replay", config, log]
                times[count].append(timed_process(argv_, out, cwd=str(REPO), env=env))
                cpu_times[count].append(CPU_SECS[-1])
                with open(out, "rb") as fh:
                    alerts[count] = sum(1 for _ in fh)
                if args.compare_tree:
                    other[count].append(
                        timed_process(argv_, out, cwd=args.compare_tree, env=env)
                    )
                    cpu_other[count].append(CPU_SECS[-1])
                    with open(out, "rb") as fh:
                        if sum(1 for _ in fh) != alerts[count]:
                            print(f"  !! {args.compare_tree} gave other alerts at {count} rules")
        floor = statistics.median(floors)
        print(
            f"  floor (read + orjson.loads, whole process): {floor:6.2f} s"
            f"  ({args.lines / floor:,.0f} lines/s; runs {', '.join(f'{x:.2f}' for x in floors)})"
        )
        results = {n: statistics.median(ts) for n, ts in times.items()}
        ratios = {
            n: statistics.median(t / f for t, f in zip(ts, floors, strict=True))
            for n, ts in times.items()
        }
        for count, took in results.items():
            print(
                f"  replay, {count:>3} rules: {took:6.2f} s"
                f"  ({args.lines / took:,.0f} lines/s, {alerts[count]} alerts)"
                f"  {ratios[count]:5.2f}x floor (median of per-round ratios;"
                f" runs {', '.join(f'{x:.2f}' for x in times[count])})"
            )
        if args.compare_tree:
            for count, ts in other.items():
                ratio = statistics.median(t / f for t, f in zip(ts, floors, strict=True))
                print(
                    f"  {args.compare_tree}: replay, {count:>3} rules:"
                    f" {statistics.median(ts):6.2f} s  {ratio:5.2f}x floor"
                    f" (runs {', '.join(f'{x:.2f}' for x in ts)})"
                )
        print("\n| case | `replay` | floor: read + `orjson.loads` | ratio |")
        print("|---|---|---|---|")
        for count, took in results.items():
            label = f"{count} rule{'s' if count > 1 else ''}"
            if count == 1:
                label += f" with a {len(iocs) // 1000}k-entry IOC list"
            print(f"| {label} | {took:.2f} s | {floor:.2f} s | {ratios[count]:.1f}x |")
        print()
        print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if 1 in results:
            print(
                f"  target replay(1 rule) <= 3x floor: {ratios[1]:.2f}x,"
                f" {'met' if ratios[1] <= 3 else 'NOT met'}"
            )
        if 1 in results and 100 in results:
            per_round = statistics.median(a / b for a, b in zip(times[100], times[1], strict=True))
            print(
                f"  target replay(100 rules) <= 2x replay(1 rule): {per_round:.2f}x,"
                f" {'met' if per_round <= 2 else 'NOT met'}"
            )
        cpu_report(cpu_floors, cpu_times, cpu_other, args.compare_tree or "")
        in_process(lines, configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
