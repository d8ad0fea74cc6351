"""Garbage-collection pauses of the connection tracker, with and without settling the heap.

Usage::

    python benchmarks/heap_bench.py [--rows 10000 --rows 30000] [--samples 300] [--rounds 2]

In-process, no sockets: a :class:`ConnectionTracker` holds ``--rows`` open
connections (synthetic records, 100 processes) and each sample replaces
1,000 of them and serves the table (``encoded_rows``), so the table turns
over ``samples * 1000 / rows`` times. Each (rows, mode) round runs in a
child process of its own, the modes alternating: ``before`` leaves the
collector as it is, ``settled`` calls :meth:`extension.heap.HeapSettler.settle`
after each sample, as the extension does. Printed per round: collections
per generation with their longest and total pause (``gc.callbacks`` start
and stop, ms), the child's CPU time, its RSS after the first 50 samples and
at the end (MiB, from /proc/self/statm), and the frozen object count at the
same two points (flat: turned-over rows are freed). The medians over the
rounds end the output, with the load average.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extension.enrich.connections import ConnectionTracker
from extension.heap import HeapSettler
from extension.model import ProcessInfo, SocketRecord

TURNOVER = 1_000
PROCESSES = {
    pid: ProcessInfo(f"p{pid}", f"/usr/bin/p{pid}", f"p{pid} -d", 1000, "user", 1, "init")
    for pid in range(1, 101)
}


def _record(n: int) -> SocketRecord:
    return SocketRecord(
        1 + n % 100, 2, 6, "10.0.0.1", 1024 + n % 60_000, f"10.1.{n // 60_000 % 256}.{n % 250}",
        443, "ESTABLISHED", 100_000 + n, 4026531840,
    )  # fmt: skip


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20


def child(rows: int, samples: int, settled: bool) -> dict[str, Any]:
    """One round: the figures as a dict (see the module docstring)."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0]) * 1000.0)

    tracker = ConnectionTracker(lambda pid: PROCESSES.get(pid or 0, ProcessInfo()), 2.0)
    records = [_record(n) for n in range(rows)]
    settler = HeapSettler() if settled else None
    cpu0 = time.process_time()
    now = 1_700_000_000.0
    figures: dict[str, Any] = {}
    for sample in range(samples):
        if sample == 5:  # the table at its size: count from here
            gc.callbacks.append(on_gc)
            cpu0 = time.process_time()
        made = rows + sample * TURNOVER
        records = records[TURNOVER:] + [_record(made + i) for i in range(TURNOVER)]
        tracker.update(records, now, started=now - 0.1)
        tracker.encoded_rows(now)
        now += 1.0
        if settler is not None:
            settler.settle()
        if sample == min(50, samples - 1):
            figures["rss_50"] = _rss_mib()
            figures["frozen_50"] = gc.get_freeze_count()
    figures["cpu_secs"] = time.process_time() - cpu0
    figures["rss_end"] = _rss_mib()
    figures["frozen_end"] = gc.get_freeze_count()
    figures["tracked"] = tracker.tracked
    for gen, spent in pauses.items():
        figures[f"gc{gen}_n"] = len(spent)
        figures[f"gc{gen}_max_ms"] = max(spent, default=0.0)
        figures[f"gc{gen}_ms"] = sum(spent)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows held (repeatable)")
    parser.add_argument("--samples", type=int, default=300, help="samples per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per (rows, mode)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows, samples, mode = args.child
        print(json.dumps(child(int(rows), int(samples), mode == "settled")))
        return 0
    print(f"python {sys.version.split()[0]}; load average {os.getloadavg()}", flush=True)
    for rows in args.rows or [10_000, 30_000]:
        results: dict[str, list[dict[str, Any]]] = {"before": [], "settled": []}
        for round_ in range(args.rounds):
            for mode in ("before", "settled") if round_ % 2 == 0 else ("settled", "before"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(rows), str(args.samples), mode],
                    check=True, capture_output=True, text=True,
                ).stdout  # fmt: skip
                f = json.loads(out)
                results[mode].append(f)
                print(
                    f"  {rows} rows, {mode:7s} round {round_ + 1}: "
                    + ", ".join(
                        f"gen {g} {f[f'gc{g}_n']} taking {f[f'gc{g}_ms']:.0f} ms"
                        f" (longest {f[f'gc{g}_max_ms']:.1f})"
                        for g in (0, 1, 2)
                    )
                    + f"; CPU {f['cpu_secs']:.2f} s; RSS {f['rss_50']:.0f} -> {f['rss_end']:.0f}"
                    f" MiB, frozen {f['frozen_50']} -> {f['frozen_end']}; {f['tracked']} rows",
                    flush=True,
                )
        for mode, rounds in results.items():
            med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
            print(
                f"{rows} rows, {mode}: longest gen-2 {med['gc2_max_ms']:.1f} ms,"
                f" gen-2 total {med['gc2_ms']:.0f} ms, gen-0/1 total"
                f" {med['gc0_ms'] + med['gc1_ms']:.0f} ms, CPU {med['cpu_secs']:.2f} s,"
                f" RSS {med['rss_50']:.0f} -> {med['rss_end']:.0f} MiB (medians)",
                flush=True,
            )
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
