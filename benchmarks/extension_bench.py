"""Benchmark the Linux collector (netlink and /proc paths), the sampler and ``generate``.

Usage::

    python benchmarks/extension_bench.py                  # about 1 minute
    python benchmarks/extension_bench.py --sockets 1000 --generate-rows

Every baseline is measured in the same run. Times in milliseconds.

1. Collect, for each N in ``--sockets`` (default 1000 10000): N established
   TCP sockets are opened in this process (N/2 loopback pairs, half over
   127.0.0.1, half over ::1), then:

   * ``netlink`` / ``proc``: ``LinuxProcCollector()`` with our namespace
     read over sock_diag netlink, and ``LinuxProcCollector(netlink=False)``
     reading /proc/net files; ``cold`` = first ``collect()`` of a new
     collector (full ``/proc/*/fd`` scan), median of ``--cold-runs``;
     ``steady`` = median of ``--runs`` further calls;
   * ``psutil``: ``psutil.net_connections('inet')``, median of
     ``--psutil-runs``;
   * ``raw``: reading /proc/net/{tcp,tcp6,udp,udp6} and splitting every line
     (``bytes.split``), the least any parser of these files does; ``read`` is
     the reading alone (the kernel's share); ``dump``: the four netlink dumps
     received into a buffer, nothing decoded (the kernel's share of the
     netlink path);
   * ratios ``steady/psutil`` and ``steady/raw`` for both paths, and
     ``steady/own floor``: against ``dump`` for netlink, ``raw`` for proc;
   * ``rss``: this process's resident set size after both collectors ran
     (MiB), and before any ran (the N sockets alone).

2. Sampler CPU, for each N in ``--cpu-sockets`` (default 1000 10000): the real
   :class:`extension.sampler.Sampler` (collect + process refresh + connection
   tracker update, what the extension runs) in its background thread for
   ``--cpu-seconds`` at each of ``--intervals-ms`` (default 100 250 500) with
   the netlink path, and at 250 ms with the /proc path; process CPU time /
   wall time in % of one core, and CPU ms per sample.

3. ``generate`` over Thrift, for each N in ``--generate-rows`` (default
   1000 10000): with N sockets open here, the osqueryd stand-in launches
   ``python -m extension`` (default options, the netlink path); once the
   table has at least N rows, ``--generate-runs`` calls of
   ``call("table", "tracked_connections", {"action": "generate", ...})`` are
   timed with an osquery Thrift client (``Extension.Client``, TBinaryProtocol
   over TBufferedTransport on ``<socket>.<uuid>``, a new connection per call
   as osqueryd does). Breakdown, measured in this process on the same rows:
   ``rows`` = ``TrackedConnectionsTable.generate`` of a warm Sampler (what
   the handler does before replying), ``encode`` = writing an
   ExtensionResponse of those rows with TBinaryProtocol into a TMemoryBuffer
   (what the extension's server does), ``decode`` = reading it back with
   TBinaryProtocol (what this client does); ``other`` = end to end minus
   those three (request, socket transfer, thread hand-off, waiting for a
   sample in progress). The same encode/decode with thrift's C extension
   (``thrift.protocol.fastbinary``, same bytes) is shown for comparison;
   osqueryd itself decodes in C++. The ``osquery`` package's generated code
   passes struct specs as tuples, which thrift 0.25's C extension refuses
   ("expecting list of size 2 for struct args"), so
   ``TBinaryProtocolAccelerated`` cannot be used as is;
   ``extension.serve.fastproto.FastBinaryProtocol`` adapts the specs, and the
   extension serves with it. Also the extension's RSS after the calls and the
   reply size.

4. Kernel events, ``--events-cpu`` (default on; needs root for the events-on
   half): with ``--events-sockets`` established sockets (default 10000) open
   here plus as many TIME_WAIT sockets, the osqueryd stand-in launches the
   extension twice, with ``--events off`` and ``--events on`` (each at its
   default sample interval); for each: the extension's CPU (``/proc/<pid>/stat``
   utime + stime over wall time, % of one core) at idle for
   ``--events-seconds``, then while a child process opens ``--events-rate``
   new TCP connections per second (default 1000) for the same time, and the
   extension's RSS after both. No queries run meanwhile: ``generate``'s own
   cost is section 3.

Needs Linux. Raises RLIMIT_NOFILE as needed (the hard limit too, when the
process may). Sockets are closed with SO_LINGER 0 (RST) so no TIME_WAIT
entries pile up between sizes. Sources: Linux proc(5), sock_diag(7);
osquery osquery/filesystem/linux/proc.cpp reads the same files per
namespace; the generate call and wire format follow
osquery 5.23 osquery/extensions/impl_thrift.cpp and osquery/core/tables.cpp.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osquery.extensions import Extension
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from extension.collect.linux_proc import LinuxProcCollector
from extension.collect.netlink_diag import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    SOCK_DIAG_BY_FAMILY,
    TCP_STATES_MASK,
    UDP_STATES_MASK,
    InetDiagReader,
    NetlinkError,
    open_diag_socket,
)
from extension.sampler import Sampler
from extension.serve.fastproto import FastBinaryProtocol, protocol_factory
from extension.serve.table import TrackedConnectionsTable
from osqueryd_standin import Standin
from tests.helpers.sockets import close_with_reset

_PROC_NET = ("tcp", "tcp6", "udp", "udp6")
PACK = Path(__file__).resolve().parent.parent / "packs" / "tracked_connections.conf"
_FD_SLACK = 256
_TABLE = "tracked_connections"
_GENERATE = {"action": "generate", "context": "{}"}
_DUMPS = (
    (socket.AF_INET, 6),
    (socket.AF_INET6, 6),
    (socket.AF_INET, 17),
    (socket.AF_INET6, 17),
)


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
    raise_nofile(count + _FD_SLACK + len(psutil.Process().open_files()))
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


def raw_dump() -> None:
    """Receive the four sock_diag dumps, decoding nothing but the end marker.

    Assumes, as the kernel does (net/netlink/af_netlink.c netlink_dump), that
    NLMSG_DONE (20 bytes) ends the last datagram of a dump.
    """
    buffer = bytearray(65536)
    for family, protocol in _DUMPS:
        states = TCP_STATES_MASK if protocol == 6 else UDP_STATES_MASK
        request = struct.pack(
            "=IHHIIBBBBI48x",
            72,
            SOCK_DIAG_BY_FAMILY,
            NLM_F_REQUEST | NLM_F_DUMP,
            1,
            0,
            family,
            protocol,
            0,
            0,
            states,
        )
        with open_diag_socket() as sock:
            sock.send(request)
            while True:
                end = sock.recv_into(buffer)
                if end >= 20 and struct.unpack_from("=IH", buffer, end - 20) == (20, 3):
                    break


def netlink_available() -> bool:
    """Whether a sock_diag dump works here."""
    try:
        InetDiagReader().dump(socket.AF_INET, 6, {}, [], [])
    except NetlinkError:
        return False
    return True


def rss_mib(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), MiB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20


# ------------------------------------------------------------------ collect


def _cold_collect(netlink: bool) -> Callable[[], object]:
    """A call of ``collect()`` on a new collector."""
    return lambda: LinuxProcCollector(netlink=netlink).collect()


def bench_collect(count: int, args: argparse.Namespace, netlink: bool) -> None:
    """Open ``count`` sockets, print the collect figures, sampler CPU, close."""
    sockets = open_established(count)
    try:
        gc.collect()
        rss_before = rss_mib()
        rows: list[tuple[str, float, float]] = []
        listed = 0
        for name, use_netlink in (("netlink", True), ("proc", False)):
            if use_netlink and not netlink:
                continue
            cold = median_ms(_cold_collect(use_netlink), args.cold_runs)
            collector = LinuxProcCollector(netlink=use_netlink)
            listed = len(collector.collect())
            steady = median_ms(collector.collect, args.runs)
            rows.append((name, cold, steady))
            del collector
        gc.collect()
        rss = rss_mib()
        ps = median_ms(lambda: psutil.net_connections("inet"), args.psutil_runs)
        raw = median_ms(raw_read_split, args.runs)
        read = median_ms(raw_read, args.runs)
        dump = median_ms(raw_dump, args.runs) if netlink else float("nan")
        print(
            f"\nN={count}: {listed} sockets listed (all namespaces);"
            f" psutil {ps:.1f}  raw /proc read+split {raw:.1f} (read alone {read:.1f})"
            f"  raw netlink dump {dump:.1f}",
            flush=True,
        )
        print(
            f"  {'path':8} {'cold':>8} {'steady':>8} {'steady/psutil':>14} {'steady/raw':>11}"
            f" {'steady/own floor':>17}"
        )
        for name, cold, steady in rows:
            floor = dump if name == "netlink" else raw
            print(
                f"  {name:8} {cold:8.1f} {steady:8.2f} {steady / ps:14.3f} {steady / raw:11.3f}"
                f" {steady / floor:17.2f}"
            )
        print(
            f"  rss {rss:.1f} MiB after both collectors (sockets alone: {rss_before:.1f} MiB)",
            flush=True,
        )
        if count in args.cpu_sockets:
            bench_sampler_cpu(args, netlink)
    finally:
        close_with_reset(sockets)


def sampler_cpu_share(
    netlink: bool, interval_ms: int, seconds: float
) -> tuple[float, int, float, str]:
    """CPU share of the real Sampler thread at one interval.

    Args:
        netlink: collector path.
        interval_ms: ``sample_interval_ms``.
        seconds: how long to let it run.

    Returns:
        (process CPU seconds / wall seconds * 100, i.e. % of one core;
        samples taken; CPU ms per sample; the collector's full and targeted
        fd scans meanwhile, as text). Two warm-up samples come first (the
        first one scans every process and fd).
    """
    collector = LinuxProcCollector(netlink=netlink)
    sampler = Sampler(collector, sample_interval_ms=interval_ms)
    sampler.sample_once()
    sampler.sample_once()
    before = sampler.stats().samples_taken
    scans = (collector.fd_scans, collector.targeted_scans)
    gc.collect()
    cpu0, wall0 = time.process_time(), time.monotonic()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    samples = sampler.stats().samples_taken - before
    fd_scans = (
        f"{collector.fd_scans - scans[0]} full + {collector.targeted_scans - scans[1]} targeted"
    )
    return cpu / wall * 100.0, samples, cpu / max(samples, 1) * 1000.0, fd_scans


def bench_sampler_cpu(args: argparse.Namespace, netlink: bool) -> None:
    """Print the sampler's CPU share at each interval."""
    runs: list[tuple[str, int]] = []
    if netlink:
        runs += [("netlink", ms) for ms in args.intervals_ms]
    runs.append(("proc", 250))
    print(f"  sampler CPU (real Sampler thread, {args.cpu_seconds:g} s per interval):")
    for name, interval_ms in runs:
        share, samples, per_sample, scans = sampler_cpu_share(
            name == "netlink", interval_ms, args.cpu_seconds
        )
        print(
            f"    {name:8} every {interval_ms:4d} ms: {share:5.2f}% of one core"
            f"  ({samples} samples, {per_sample:.2f} ms CPU each; fd scans: {scans})",
            flush=True,
        )


# ----------------------------------------------------------------- generate


def call_generate(path: str) -> list[dict[str, str]]:
    """One ``generate`` over a new Thrift connection, as osqueryd calls it.

    Raises:
        RuntimeError: the extension answered a non-zero status.
    """
    sock = TSocket.TSocket(unix_socket=path)
    sock.setTimeout(300_000)
    transport = TTransport.TBufferedTransport(sock)
    client = Extension.Client(TBinaryProtocol.TBinaryProtocol(transport))
    transport.open()
    try:
        reply = client.call("table", _TABLE, _GENERATE)
    finally:
        transport.close()
    if reply.status.code != 0:
        raise RuntimeError(f"generate failed: {reply.status.message}")
    return list(reply.response)


def encode(response: ExtensionResponse, accelerated: bool) -> bytes:
    """ExtensionResponse -> TBinaryProtocol bytes."""
    buffer = TTransport.TMemoryBuffer()
    protocol_class: Any = FastBinaryProtocol if accelerated else TBinaryProtocol.TBinaryProtocol
    protocol: Any = protocol_class(buffer)
    response.write(protocol)
    return bytes(buffer.getvalue())


def decode(data: bytes, accelerated: bool) -> ExtensionResponse:
    """TBinaryProtocol bytes -> ExtensionResponse."""
    buffer = TTransport.TMemoryBuffer(data)
    protocol_class: Any = FastBinaryProtocol if accelerated else TBinaryProtocol.TBinaryProtocol
    protocol: Any = protocol_class(buffer)
    response = ExtensionResponse()
    response.read(protocol)
    return response


def bench_generate(count: int, args: argparse.Namespace) -> None:
    """Open ``count`` sockets; time generate over Thrift and its parts; close."""
    sockets = open_established(count)
    workdir = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
    osqd = Standin(
        str(workdir / "osquery.em"),
        workdir / "logs",
        host_identifier="bench",
        extensions_interval_secs=3,
        extensions_timeout_secs=10,
        run_scheduler=False,
        ephemeral=True,
        shutdown_grace_secs=3.0,
        kill_grace_secs=3.0,
    )
    try:
        osqd.start()
        child = osqd.launch_extension(
            [sys.executable, "-m", "extension", "--state-file", str(workdir / "ext.state")],
            stderr=subprocess.DEVNULL,
        )
        osqd.wait_for_table(_TABLE, 15)
        uuid = next(u for u, name in osqd.extensions().items() if name == _TABLE)
        path = f"{osqd.socket_path}.{uuid}"
        deadline = time.monotonic() + 30
        while len(call_generate(path)) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"the table never reached {count} rows")
            time.sleep(0.2)
        extension = psutil.Process(child.pid)
        cpu0 = extension.cpu_times()
        wall0 = time.monotonic()
        times: list[float] = []
        served = 0
        for _ in range(args.generate_runs):
            start = time.perf_counter()
            served = len(call_generate(path))
            times.append(time.perf_counter() - start)
        wall = time.monotonic() - wall0
        cpu1 = extension.cpu_times()
        ext_cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100.0
        ext_rss = rss_mib(child.pid)
        end_to_end = statistics.median(times) * 1000.0
        osqd.stop()

        sampler = Sampler(LinuxProcCollector())
        table = TrackedConnectionsTable(sampler)
        sampler.sample_once()
        sampler.sample_once()
        sample_ms = median_ms(sampler.sample_once, 3)
        sampler.sample_once()
        rows_ms = median_ms(lambda: table.generate({}), args.generate_runs)
        rows = table.generate({})
        response = ExtensionResponse(status=ExtensionStatus(code=0, message="OK"), response=rows)
        data = encode(response, accelerated=False)
        enc = median_ms(lambda: encode(response, accelerated=False), args.generate_runs)
        dec = median_ms(lambda: decode(data, accelerated=False), args.generate_runs)
        enc_c = median_ms(lambda: encode(response, accelerated=True), args.generate_runs)
        dec_c = median_ms(lambda: decode(data, accelerated=True), args.generate_runs)
        assert encode(response, accelerated=True) == data
        assert decode(data, accelerated=True) == decode(data, accelerated=False)
        # The extension encodes with whatever protocol_factory() picks; this
        # script's client decodes with the pure-Python protocol, as before.
        probe = protocol_factory().getProtocol(TTransport.TMemoryBuffer())
        server_fast = isinstance(probe, FastBinaryProtocol)
        enc_server = enc_c if server_fast else enc
        other = end_to_end - rows_ms - enc_server - dec
        print(
            f"\ngenerate over Thrift, N={count} sockets open: {served} rows served,"
            f" reply {len(data) / 2**20:.2f} MiB ({len(rows)} rows in-process)",
            flush=True,
        )
        print(
            f"  end to end {end_to_end:.1f} ms (median of {args.generate_runs});"
            f" extension CPU during the calls {ext_cpu:.0f}% of one core;"
            f" extension RSS {ext_rss:.1f} MiB"
        )
        encoder = "C extension" if server_fast else "pure Python"
        print(
            f"  breakdown: rows {rows_ms:.1f} + extension encode ({encoder}) {enc_server:.1f}"
            f" + client decode (pure Python) {dec:.1f} + other {other:.1f} ms"
            f"  ({rows_ms / end_to_end:.0%} / {enc_server / end_to_end:.0%}"
            f" / {dec / end_to_end:.0%} / {other / end_to_end:.0%})"
        )
        print(
            f"  encoders on the same bytes: pure Python {enc:.1f}, C extension {enc_c:.1f}"
            f" ({enc / enc_c:.0f}x faster); decoders: pure Python {dec:.1f}, C extension"
            f" {dec_c:.1f} ({dec / dec_c:.0f}x faster; osqueryd decodes in C++);"
            f" background sample at this N: {sample_ms:.1f} ms",
            flush=True,
        )
    finally:
        osqd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        close_with_reset(sockets)


def open_time_wait(count: int) -> int:
    """Leave ``count`` TIME_WAIT sockets behind: connect, accept, close the client first.

    Returns:
        the number of TIME_WAIT sockets the kernel holds now (all of this host's).
    """
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
        address = listener.getsockname()
        for _ in range(count):
            client = socket.create_connection(address)
            accepted, _ = listener.accept()
            client.close()  # the active closer keeps the TIME_WAIT
            accepted.close()
    return time_wait_count()


def time_wait_count() -> int:
    """TIME_WAIT sockets on this host now."""
    return sum(1 for c in psutil.net_connections("tcp") if c.status == psutil.CONN_TIME_WAIT)


def wait_time_wait_below(count: int, timeout_secs: float = 70.0) -> None:
    """Wait (TIME_WAIT lasts 60 s on Linux) until fewer than ``count`` remain."""
    deadline = time.monotonic() + timeout_secs
    while time_wait_count() >= count and time.monotonic() < deadline:
        time.sleep(2.0)


def connect_at_rate(rate: int, seconds: float) -> subprocess.Popen[bytes]:
    """A child process opening ``rate`` short TCP connections per second for ``seconds``."""
    code = f"""
import socket, time
server = socket.create_server(("127.0.0.1", 0), backlog=4096)
address = server.getsockname()
server.setblocking(False)
start = time.monotonic()
n = 0
while time.monotonic() - start < {seconds}:
    due = start + n / {rate}
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    c = socket.create_connection(address)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
    c.close()  # reset: no TIME_WAIT piles up beside the ones measured
    try:
        while True:
            server.accept()[0].close()
    except BlockingIOError:
        pass
    n += 1
"""
    return subprocess.Popen([sys.executable, "-c", code])


def process_cpu_secs(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _cpu_share(pid: int, seconds: float, rate: int = 0) -> float:
    """% of one core ``pid`` used over ``seconds``, with ``rate`` new connections/s meanwhile."""
    cpu0, wall0 = process_cpu_secs(pid), time.monotonic()
    if rate:
        connect_at_rate(rate, seconds).wait()
        time.sleep(0.5)
    else:
        time.sleep(seconds)
    return (process_cpu_secs(pid) - cpu0) / (time.monotonic() - wall0) * 100.0


def bench_events(args: argparse.Namespace) -> None:
    """Extension CPU and RSS at idle and under connection churn, events off vs on."""
    count = args.events_sockets
    print(
        f"\nkernel events: extension CPU (% of one core) and RSS, {count} established +"
        f" TIME_WAIT sockets open; {args.events_rate} new loopback connections/s (both ends"
        " on this host: two connections each); without queries, then with"
        " packs/tracked_connections.conf every 2 s",
        flush=True,
    )
    sockets = open_established(count)
    baseline = count // 5  # TIME_WAIT left from earlier runs drains first
    try:
        for mode in ("off", "on"):
            wait_time_wait_below(baseline)
            time_wait = open_time_wait(count)
            workdir = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
            osqd = Standin(
                str(workdir / "osquery.em"),
                workdir / "logs",
                host_identifier="bench",
                extensions_interval_secs=3,
                extensions_timeout_secs=10,
                ephemeral=True,
            )
            try:
                osqd.start()
                command = [sys.executable, "-m", "extension", "--events", mode]
                command += ["--state-file", str(workdir / "ext.state")]
                child = osqd.launch_extension(command, stderr=subprocess.DEVNULL)
                osqd.wait_for_table(_TABLE, 15)
                ((stats),) = osqd.query(
                    "SELECT source, sample_interval_ms, events_off_reason"
                    " FROM tracked_connections_stats"
                )
                time.sleep(3.0)  # first samples and scans done
                idle = _cpu_share(child.pid, args.events_seconds)
                busy = _cpu_share(child.pid, args.events_seconds, args.events_rate)
                osqd.add_pack("tracked_connections", PACK)
                time.sleep(4.0)
                idle_pack = _cpu_share(child.pid, args.events_seconds)
                busy_pack = _cpu_share(child.pid, args.events_seconds, args.events_rate)
                ((after),) = osqd.query(
                    "SELECT events_read, events_lost FROM tracked_connections_stats"
                )
                rss = rss_mib(child.pid)
                reason = f" (off because: {stats['events_off_reason']})" if mode == "on" and (
                    stats["events_off_reason"]) else ""  # fmt: skip
                print(
                    f"  events {mode:3s}: source {stats['source']}, sample interval"
                    f" {stats['sample_interval_ms']} ms, {time_wait} TIME_WAIT at start;"
                    f" no queries: idle {idle:.2f} %, load {busy:.2f} %;"
                    f" with the pack: idle {idle_pack:.2f} %, load {busy_pack:.2f} %;"
                    f" RSS {rss:.1f} MiB; events read {after['events_read']},"
                    f" lost {after['events_lost']}{reason}",
                    flush=True,
                )
            finally:
                osqd.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        close_with_reset(sockets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--sockets",
        type=int,
        nargs="*",
        default=[1000, 10000],
        help="socket counts for the collect figures (default 1000 10000)",
    )
    parser.add_argument("--runs", type=int, default=9, help="steady-state runs per median")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold runs per median")
    parser.add_argument("--psutil-runs", type=int, default=5, help="psutil runs per median")
    parser.add_argument(
        "--intervals-ms",
        type=int,
        nargs="+",
        default=[100, 250, 500],
        help="sampler periods for the CPU share, ms (default 100 250 500)",
    )
    parser.add_argument(
        "--cpu-seconds",
        type=float,
        default=6.0,
        help="how long to run the sampler per interval, seconds (default 6)",
    )
    parser.add_argument(
        "--cpu-sockets",
        type=int,
        nargs="*",
        default=[1000, 10000],
        help="socket counts at which to measure the sampler CPU share (default 1000 10000)",
    )
    parser.add_argument(
        "--generate-rows",
        type=int,
        nargs="*",
        default=[1000, 10000],
        help="socket counts for generate over Thrift (default 1000 10000; none to skip)",
    )
    parser.add_argument("--generate-runs", type=int, default=5, help="generate calls per median")
    parser.add_argument(
        "--events-cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the kernel events section (default on)",
    )
    parser.add_argument(
        "--events-sockets",
        type=int,
        default=10000,
        help="established (and TIME_WAIT) sockets for the events section (default 10000)",
    )
    parser.add_argument(
        "--events-seconds",
        type=float,
        default=10.0,
        help="seconds measured for each figure of the events section (default 10)",
    )
    parser.add_argument(
        "--events-rate", type=int, default=1000, help="new connections per second (default 1000)"
    )
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("this benchmark needs Linux /proc", file=sys.stderr)
        return 2
    # The sampler's privilege warning and thrift's connection errors while the
    # stand-in stops would interleave with the figures.
    logging.getLogger("extension.sampler").setLevel(logging.ERROR)
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    netlink = netlink_available()
    started = time.monotonic()
    print(
        f"python {sys.version.split()[0]}, psutil {psutil.__version__},"
        f" {psutil.cpu_count()} cpus, {len(psutil.pids())} pids,"
        f" sock_diag netlink {'available' if netlink else 'NOT available'}; times in ms",
        flush=True,
    )
    for count in args.sockets:
        bench_collect(count, args, netlink)
    for count in args.generate_rows:
        bench_generate(count, args)
    if args.events_cpu:
        bench_events(args)
    print(f"\ntotal {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
