"""Benchmark the Linux /proc collector against psutil and the raw /proc floor.

Usage::

    python benchmarks/extension_bench.py --sockets 1000 10000

For each N the script opens N established TCP sockets in this process
(N/2 loopback pairs, half over 127.0.0.1 and half over ::1), then prints one
line of figures, all in milliseconds unless marked:

* ``cold``: ``LinuxProcCollector().collect()`` on a new collector (first
  call: full ``/proc/*/fd`` scan), median of ``--cold-runs``;
* ``steady``: median of ``--runs`` further calls on a warm collector;
* ``psutil``: ``psutil.net_connections('inet')``, median of ``--psutil-runs``;
* ``raw``: reading /proc/net/{tcp,tcp6,udp,udp6} and splitting every line
  into fields (``bytes.split``), the least any parser of these files does;
  ``read`` is the reading alone (the kernel's share);
* ratios ``steady/psutil`` and ``steady/raw``;
* ``rss``: this process's resident set size after our runs (before psutil's),
  MiB, and in parentheses the same with the sockets open but before any
  collector ran;
* for N in ``--cpu-sockets`` (default 1000): the CPU share of a sampler
  thread calling ``collect()`` every ``--interval-ms`` (default 250 ms) for
  ``--cpu-seconds`` (default 10 s), as process CPU time / wall time, in % of
  one core.

Needs Linux. Raises RLIMIT_NOFILE as needed (the hard limit too, when the
process may). Sockets are closed with SO_LINGER 0 (RST) so no TIME_WAIT
entries pile up between sizes. Sources: Linux proc(5); osquery
osquery/filesystem/linux/proc.cpp reads the same files per namespace (see
osquery-protocol-and-logs.md).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import socket
import statistics
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extension.collect.linux_proc import LinuxProcCollector

_PROC_NET = ("tcp", "tcp6", "udp", "udp6")
_FD_SLACK = 256


def raise_nofile(needed: int) -> None:
    """Raise RLIMIT_NOFILE's soft (and if need be hard) limit to ``needed``.

    Raises:
        SystemExit: the hard limit is lower and may not be raised.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            return
        except (ValueError, OSError) as err:
            raise SystemExit(
                f"need {needed} open files, hard limit is {hard} and cannot be raised: {err}"
            ) from err
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_established(count: int) -> list[socket.socket]:
    """Open ``count`` established TCP sockets (``count // 2`` loopback pairs).

    Half of the pairs use 127.0.0.1, half ::1 (IPv4 only if IPv6 is off).

    Returns:
        the listeners first, then every client and accepted socket.
    """
    listeners = [socket.create_server(("127.0.0.1", 0), backlog=1024)]
    if socket.has_ipv6:
        with contextlib.suppress(OSError):
            listeners.append(socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=1024))
    sockets: list[socket.socket] = list(listeners)
    for i in range(count // 2):
        listener = listeners[i % len(listeners)]
        client = socket.socket(listener.family, socket.SOCK_STREAM)
        client.connect(listener.getsockname()[:2])
        accepted, _ = listener.accept()
        sockets += [client, accepted]
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    """Close with SO_LINGER 0: RST instead of FIN, so no TIME_WAIT remains."""
    linger = struct.pack("ii", 1, 0)
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        sock.close()


def median_ms(func: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls, in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def raw_read() -> None:
    """Read the four /proc/net files (bytes), nothing else."""
    for name in _PROC_NET:
        try:
            with open(f"/proc/net/{name}", "rb", 0) as f:
                f.read()
        except FileNotFoundError:
            pass


def raw_read_split() -> None:
    """Read the four /proc/net files and split every line into fields."""
    for name in _PROC_NET:
        try:
            with open(f"/proc/net/{name}", "rb", 0) as f:
                data = f.read()
        except FileNotFoundError:
            continue
        for line in data.split(b"\n"):
            line.split()


def cold_collect() -> None:
    LinuxProcCollector().collect()


def sampler_cpu_share(interval_s: float, duration_s: float) -> tuple[float, int]:
    """CPU share of a thread calling ``collect()`` every ``interval_s``.

    Args:
        interval_s: sample period, seconds.
        duration_s: how long to sample, seconds.

    Returns:
        (process CPU seconds / wall seconds * 100, i.e. % of one core;
        number of samples taken). The main thread only waits meanwhile.
    """
    collector = LinuxProcCollector()
    collector.collect()
    stop = threading.Event()
    samples = 0

    def run() -> None:
        nonlocal samples
        deadline = time.monotonic()
        while not stop.is_set():
            collector.collect()
            samples += 1
            deadline += interval_s
            stop.wait(max(0.0, deadline - time.monotonic()))

    cpu0, wall0 = time.process_time(), time.monotonic()
    thread = threading.Thread(target=run, name="sampler")
    thread.start()
    time.sleep(duration_s)
    stop.set()
    thread.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return cpu / wall * 100.0, samples


def bench(count: int, args: argparse.Namespace) -> None:
    """Open ``count`` sockets, print one line of figures, close them."""
    raise_nofile(count + _FD_SLACK + len(psutil.Process().open_files()))
    sockets = open_established(count)
    try:
        gc.collect()
        rss_before = psutil.Process().memory_info().rss / 2**20
        cold = median_ms(cold_collect, args.cold_runs)
        collector = LinuxProcCollector()
        listed = len(collector.collect())
        steady = median_ms(collector.collect, args.runs)
        scans_during_steady = collector.fd_scans - 1
        rss = psutil.Process().memory_info().rss / 2**20
        ps = median_ms(lambda: psutil.net_connections("inet"), args.psutil_runs)
        raw = median_ms(raw_read_split, args.runs)
        read = median_ms(raw_read, args.runs)
        print(
            f"N={count:>6}  listed={listed:>6}  cold={cold:8.1f}  steady={steady:7.1f}"
            f"  psutil={ps:8.1f}  raw={raw:7.1f}  read={read:7.1f}"
            f"  steady/psutil={steady / ps:5.2f}  steady/raw={steady / raw:5.2f}"
            f"  rss={rss:6.1f}MiB (sockets open, no collector: {rss_before:.1f})"
            f"  full_scans_in_steady={scans_during_steady}",
            flush=True,
        )
        if count in args.cpu_sockets:
            share, samples = sampler_cpu_share(args.interval_ms / 1000.0, args.cpu_seconds)
            print(
                f"N={count:>6}  sampler every {args.interval_ms:g} ms for {args.cpu_seconds:g} s:"
                f" {samples} samples, CPU {share:.2f}% of one core",
                flush=True,
            )
    finally:
        close_all(sockets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--sockets",
        type=int,
        nargs="+",
        default=[1000, 10000],
        help="socket counts to measure (default 1000 10000)",
    )
    parser.add_argument("--runs", type=int, default=9, help="steady-state runs per median")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold runs per median")
    parser.add_argument("--psutil-runs", type=int, default=5, help="psutil runs per median")
    parser.add_argument(
        "--interval-ms",
        type=float,
        default=250.0,
        help="sampler period for the CPU share, ms (default 250)",
    )
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=10.0,
        help="how long to run the sampler, seconds (default 10)",
    )
    parser.add_argument(
        "--cpu-sockets",
        type=int,
        nargs="*",
        default=[1000],
        help="socket counts at which to measure the CPU share (default 1000)",
    )
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("this benchmark needs Linux /proc", file=sys.stderr)
        return 2
    print(
        f"python {sys.version.split()[0]}, psutil {psutil.__version__},"
        f" {psutil.cpu_count()} cpus, {len(psutil.pids())} pids; times in ms",
        flush=True,
    )
    for count in args.sockets:
        bench(count, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
