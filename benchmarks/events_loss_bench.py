"""Kernel events lost under connection churn and a pack: extension variants side by side.

Usage (root: kernel events need it)::

    python benchmarks/events_loss_bench.py \\
        --variant "old=--events-ring-kib 512" --variant "new="

The conditions of extension_bench.py's events section: ``--sockets``
established loopback sockets (default 10000) are held here and as many
TIME_WAIT sockets are left at the start of every round; each variant is an
extension (``python -m extension --events on`` plus its own options, run
through events_reader_probe.py) under its own osqueryd stand-in running
packs/tracked_connections.conf every 2 s. All variants run at the same time,
so whatever else the shared host does weighs on all alike; the first variant
is the baseline. In each of ``--rounds`` rounds a child process opens
``--rate`` new loopback connections per second (default 1000) for
``--seconds`` (default 20); for each variant it prints the round's
``events_read`` and ``events_lost`` (from ``tracked_connections_stats``),
the reader figures from the probe (longest time a ring went undrained, gaps
over 250 ms and 1 s, the longest read with decode, ring bytes per second
per CPU, the most one ring held at one read), the extension's CPU (% of one
core over the round) and its RSS after the round (and the rings' share of it), and the load
average.
The last lines give the median over the rounds of each.
Sources: perf_event_open(2) (ring, PERF_RECORD_LOST), proc(5) (stat, status).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil
from extension_bench import (
    PACK,
    _stats,
    connect_at_rate,
    open_established,
    open_time_wait,
    process_cpu_secs,
    rss_mib,
    wait_time_wait_below,
)

from osqueryd_standin import Standin
from tests.helpers.sockets import close_with_reset

_PROBE = Path(__file__).resolve().parent / "events_reader_probe.py"


@dataclass
class Variant:
    """One extension under its own stand-in."""

    name: str
    options: list[str]
    workdir: Path
    osqd: Standin | None = None
    pid: int = 0

    @property
    def probe_file(self) -> Path:
        return self.workdir / "probe.json"

    def probe(self) -> dict[str, Any]:
        try:
            figures: dict[str, Any] = json.loads(self.probe_file.read_text())
            return figures
        except (OSError, ValueError):
            return {}

    def counters(self) -> tuple[int, int]:
        assert self.osqd is not None
        ((row),) = self.osqd.query("SELECT events_read, events_lost FROM tracked_connections_stats")
        return int(row["events_read"]), int(row["events_lost"])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def ring_rss_mib(pid: int) -> float:
    """Resident MiB of ``pid``'s perf ring mappings (proc(5) smaps)."""
    total_kib, in_ring = 0, False
    with open(f"/proc/{pid}/smaps", encoding="ascii", errors="replace") as f:
        for line in f:
            first = line.split(" ", 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                in_ring = "perf_event" in line
            elif in_ring and line.startswith("Rss:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def _delta(before: dict[str, Any], after: dict[str, Any], *keys: str) -> float:
    def get(figures: Any) -> float:
        for key in keys:
            figures = figures.get(key, {}) if isinstance(figures, dict) else 0
        return float(figures) if isinstance(figures, (int, float)) else 0.0

    return get(after) - get(before)


def start(variant: Variant) -> None:
    osqd = Standin(
        str(variant.workdir / "osquery.em"),
        variant.workdir / "logs",
        host_identifier=variant.name,
        extensions_interval_secs=3,
        extensions_timeout_secs=10,
        ephemeral=True,
    )
    osqd.start()
    variant.osqd = osqd
    command = [sys.executable, str(_PROBE), str(variant.probe_file), "--events", "on"]
    command += ["--state-file", "", *variant.options]
    variant.pid = osqd.launch_extension(command, stderr=subprocess.DEVNULL).pid
    osqd.wait_for_table("tracked_connections", 30)
    stats = _stats(osqd)
    if stats.get("events_off_reason"):
        raise SystemExit(f"{variant.name}: kernel events off: {stats['events_off_reason']}")
    osqd.add_pack("tracked_connections", PACK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=OPTIONS: an extension with these options (the first is the baseline)",
    )
    parser.add_argument("--sockets", type=int, default=10000, help="established sockets held")
    parser.add_argument("--rate", type=int, default=1000, help="new connections per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of churn per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians over them)")
    args = parser.parse_args(argv)
    specs = args.variant or ["old=--events-ring-kib 512", "default="]
    print(
        f"python {sys.version.split()[0]}, {psutil.cpu_count()} cpus; {args.sockets}"
        f" established + TIME_WAIT sockets, {args.rate} new loopback connections/s for"
        f" {args.seconds:.0f} s per round, pack every 2 s; load average {_load()}",
        flush=True,
    )
    variants = []
    for spec in specs:
        name, _, options = spec.partition("=")
        workdir = Path(tempfile.mkdtemp(prefix="tce", dir="/tmp"))
        variants.append(Variant(name, shlex.split(options), workdir))
    sockets = open_established(args.sockets)
    results: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    try:
        for variant in variants:
            start(variant)
        time.sleep(5.0)
        for round_ in range(args.rounds):
            wait_time_wait_below(args.sockets // 5)
            made = open_time_wait(args.sockets)
            time.sleep(4.0)  # a pack run and a sample over the new TIME_WAIT sockets
            before = {v.name: (v.counters(), v.probe(), process_cpu_secs(v.pid)) for v in variants}
            wall0 = time.monotonic()
            connect_at_rate(args.rate, args.seconds).wait()
            time.sleep(1.5)  # the last records read and a probe write
            wall = time.monotonic() - wall0
            load = _load()
            for v in variants:
                (read0, lost0), probe0, cpu0 = before[v.name]
                read1, lost1 = v.counters()
                probe1 = v.probe()
                cpu = (process_cpu_secs(v.pid) - cpu0) / wall * 100.0
                nbytes = probe1.get("bytes", 0) - probe0.get("bytes", 0)
                over = {
                    k: probe1["gaps_over_ms"][k] - probe0.get("gaps_over_ms", {}).get(k, 0)
                    for k in probe1.get("gaps_over_ms", {})
                }
                figures = {
                    "read": read1 - read0,
                    "lost": lost1 - lost0,
                    "max_gap_ms": probe1.get("max_gap_ms", 0.0),
                    "over_250": over.get("250", 0),
                    "over_1000": over.get("1000", 0),
                    "max_read_ms": probe1.get("max_read_ms", 0.0),
                    "kib_s_cpu": nbytes / wall / 1024 / (psutil.cpu_count() or 1),
                    "max_ring_kib": probe1.get("max_ring_bytes", 0) / 1024,
                    "gap_sample": _delta(probe0, probe1, "long_gaps", "sample"),
                    "gap_generate": _delta(probe0, probe1, "long_gaps", "generate"),
                    "gap_gc": _delta(probe0, probe1, "long_gaps", "gc"),
                    "gap_neither": _delta(probe0, probe1, "long_gaps", "neither"),
                    "max_gc2_ms": probe1.get("max_gc_ms", {}).get("2", 0.0),
                    "gap_ms": _delta(probe0, probe1, "long_gap_ms"),
                    "gap_cpu_ms": _delta(probe0, probe1, "long_gap_reader_cpu_ms"),
                    "cpu": cpu,
                    "rss": rss_mib(v.pid),
                    "ring_rss": ring_rss_mib(v.pid),
                }
                results[v.name].append(figures)
                lost_pct = figures["lost"] / max(figures["read"] + figures["lost"], 1) * 100
                print(
                    f"  round {round_ + 1} {v.name:8s} ({' '.join(v.options) or 'defaults'}):"
                    f" {made} TIME_WAIT; events read {figures['read']:.0f},"
                    f" lost {figures['lost']:.0f} ({lost_pct:.2f} %);"
                    f" ring undrained up to {figures['max_gap_ms']:.0f} ms (since start),"
                    f" gaps >250 ms {figures['over_250']:.0f}, >1 s {figures['over_1000']:.0f};"
                    f" of those >250 ms: {figures['gap_sample']:.0f} during a sample,"
                    f" {figures['gap_generate']:.0f} during a generate,"
                    f" {figures['gap_gc']:.0f} during a collection,"
                    f" {figures['gap_neither']:.0f} none, reader CPU in them"
                    f" {figures['gap_cpu_ms'] / max(figures['gap_ms'], 1) * 100:.1f} %;"
                    f" longest read {figures['max_read_ms']:.0f} ms, longest gen-2"
                    f" collection {figures['max_gc2_ms']:.0f} ms;"
                    f" {figures['kib_s_cpu']:.0f} KiB/s per CPU, most held"
                    f" {figures['max_ring_kib']:.0f} KiB; CPU {figures['cpu']:.1f} %,"
                    f" RSS {figures['rss']:.1f} MiB (rings {figures['ring_rss']:.1f});"
                    f" load average {load}",
                    flush=True,
                )
        print("medians over the rounds:")
        for v in variants:
            rows = results[v.name]
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(
                f"  {v.name:8s}: lost {med['lost']:.0f} of {med['read'] + med['lost']:.0f};"
                f" gaps >250 ms {med['over_250']:.0f}; CPU {med['cpu']:.1f} %,"
                f" RSS {med['rss']:.1f} MiB (rings {med['ring_rss']:.1f})",
                flush=True,
            )
    finally:
        for v in variants:
            if v.osqd is not None:
                v.osqd.stop()
            shutil.rmtree(v.workdir, ignore_errors=True)
        close_with_reset(sockets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
