"""Benchmark the Linux collector (netlink and /proc paths), the sampler and ``generate``.

Usage::

    python benchmarks/extension_bench.py                  # several minutes
    python benchmarks/extension_bench.py --sockets --no-events-cpu   # sections 3, 3b

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
   10000 30000): N established loopback sockets are held by child processes
   (at most 10000 each: RLIMIT_NOFILE's hard limit may be 20000); the
   osqueryd stand-in launches ``python -m extension --events off
   --sample-interval-ms 600000`` (one sample at start, then serving only, so
   its CPU time during the calls is what ``generate`` costs it). Once the
   table holds N rows: its RSS before the first ``generate``, after it, and
   after ``--generate-runs`` more calls (``call("table",
   "tracked_connections", {"action": "generate", "context": ...})`` with an
   osquery Thrift client, a new connection per call as osqueryd does,
   decoding with thrift's C extension), its highest RSS (VmHWM), and its CPU
   per call (utime + stime from /proc in 10 ms ticks, over all the calls).
   For each query of ``--generate-queries``: ``pack``, the context osqueryd
   sends for the pack's query (``colsUsed``: the columns of its SELECT list,
   in the table's order), and ``all``, the context of ``SELECT *`` (every
   column). Floors from the same run: thrift's C encoder writing the same
   rows from ready dicts; sending the reply's bytes over a Unix socket pair
   to a thread that drains them at once (``floor: send``); and sending the
   whole reply message to another process that reads it as the calls do,
   through thrift's buffered transport and C decoder (``to thrift``, the
   sender's CPU; ``ratio``: the extension's CPU per call over it). ``ext
   share``: the extension's CPU per call over the end-to-end time. Medians
   of ``--repeat`` runs.

3b. Sampler by kind of socket, for each N in ``--kind-sockets`` (default
   10000 30000): the real Sampler's CPU per sample (collect, processes,
   tracker; mean over ``--kind-samples``) beside the four raw sock_diag dumps
   (received, nothing decoded), with no sockets, with N established sockets,
   with the same held by two processes each (a fork), and with
   ``--time-wait-sockets`` TIME_WAIT sockets; and what the sockets add to
   each. Medians of ``--repeat`` runs.

By default (``--isolate``, as root) the whole run happens in new pid, network
and mount namespaces (unshare(1)) with other namespaces' nsfs mounts
unmounted inside, so only this run's sockets and processes are measured on a
shared host; the kernel's socket hash table is still shared, which is why
every ratio is taken against a floor measured at the same moment.

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

5. DNS names, ``--dns-cpu`` (default on; needs root): ``--dns-rate``
   (default 1000) real DNS answers per second (100 names, a third of them
   behind a CNAME, A and AAAA, built with dnspython) are sent from UDP port
   53 on a loopback address to a client socket that reads them. Two
   osqueryd stand-ins launch the extension side by side, one with ``--dns
   off``, one with ``--dns on`` (kernel events as the host allows, the same
   for both), so whatever else the host does weighs on both alike; in each of
   ``--dns-rounds`` rounds, both extensions' CPU (% of one core) is measured
   over the same ``--dns-seconds``, idle and under the answers. The figure is
   the median of the rounds' differences, on minus off, under load (target:
   2 % of one core or less). In-process, on the same
   answers: the parser against dnspython's ``dns.message.from_wire`` (µs per
   answer), and ``DnsCapture.drain`` per packet read (socket read, parse,
   cache), with the share of one core that gives at the rate.

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
import itertools
import json
import logging
import os
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from osquery.extensions import Extension
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TMessageType
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
from extension.columns import COLUMN_NAMES
from extension.sampler import Sampler
from extension.serve.fastproto import FastBinaryProtocol
from osqueryd_standin import Standin
from tests.helpers.sockets import close_with_reset

REPO = Path(__file__).resolve().parent.parent
_PROC_NET = ("tcp", "tcp6", "udp", "udp6")
_ISOLATED = "TRACKED_CONNECTIONS_BENCH_ISOLATED"
PACK = REPO / "packs" / "tracked_connections.conf"
_FD_SLACK = 256
_TABLE = "tracked_connections"
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


def hide_other_namespaces() -> None:
    """Unmount, in this run's own mount namespace, the nsfs mounts of other namespaces.

    The collector reads the network namespaces it finds through nsfs mounts
    (``ip netns`` names) too; in the isolated run these are other users'
    sockets. unshare(1) makes the copied mounts private, so the host keeps them.
    """
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if " - nsfs " in line]
    for point in points:
        subprocess.run(["umount", "-l", point], check=False)


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


def generate_request(query: str) -> dict[str, str]:
    """The ``generate`` request osqueryd sends for ``query``: ``pack`` (the pack's
    SELECT list) or ``all`` (``SELECT *``). Its context lists the columns the
    query reads, in the table's order (osquery/core/tables.cpp
    ``TablePlugin::setRequestFromContext``)."""
    if query == "all":
        used = list(COLUMN_NAMES)
    else:
        select = json.loads(PACK.read_text())["queries"]["tracked_connections"]["query"]
        listed = {name.strip() for name in select.split("SELECT", 1)[1].split("FROM")[0].split(",")}
        used = [name for name in COLUMN_NAMES if name in listed]
    context = {"constraints": [], "colsUsed": used}
    return {"action": "generate", "context": json.dumps(context, separators=(",", ":"))}


@contextlib.contextmanager
def osquery_client(path: str) -> Iterator[Any]:
    """An osquery ``Extension`` client on a new connection to the Unix socket
    ``path``, as osqueryd connects: thrift's buffered transport, replies decoded
    by its C extension (osqueryd decodes in C++); closed on leaving."""
    sock = TSocket.TSocket(unix_socket=path)
    sock.setTimeout(300_000)
    transport = TTransport.TBufferedTransport(sock)
    transport.open()
    try:
        yield Extension.Client(FastBinaryProtocol(transport))
    finally:
        transport.close()


def call_generate(path: str, request: dict[str, str]) -> list[dict[str, str]]:
    """One ``generate`` over a new Thrift connection, as osqueryd calls it.

    The reply is decoded by thrift's C extension (osqueryd decodes in C++).

    Raises:
        RuntimeError: the extension answered a non-zero status.
    """
    with osquery_client(path) as client:
        reply = client.call("table", _TABLE, request)
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


_HOLDER = r"""
import os, resource, socket, struct, sys
count, shared = int(sys.argv[1]), sys.argv[2] == "shared"
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 256), hard))
listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
held = [listener]
for _ in range(count // 2):
    client = socket.create_connection(listener.getsockname())
    held += [client, listener.accept()[0]]
child = os.fork() if shared else -1
if child == 0:
    sys.stdin.read()
    os._exit(0)
print("ready", flush=True)
sys.stdin.read()
for sock in held:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
if child > 0:
    os.waitpid(child, 0)
"""
_PER_HOLDER = 10_000
"""Sockets per holder process: RLIMIT_NOFILE's hard limit may be 20000 here."""


@contextlib.contextmanager
def held_established(count: int, shared: bool = False) -> Iterator[list[int]]:
    """``count`` established loopback TCP sockets held by child processes.

    Up to :data:`_PER_HOLDER` per child (``count // 2`` pairs over 127.0.0.1),
    so counts above the open-files limit of one process work. With
    ``shared``, each child forks once and both hold every socket (a
    preforking server's workers, inherited descriptors).

    Yields:
        the holders' pids.
    """
    children: list[subprocess.Popen[bytes]] = []
    script = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp")) / "holder.py"
    script.write_text(_HOLDER)
    try:
        left = count
        while left > 0:
            part = min(left, _PER_HOLDER)
            left -= part
            children.append(subprocess.Popen(
                [sys.executable, str(script), str(part), "shared" if shared else "own"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            ))  # fmt: skip
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != b"ready":
                raise SystemExit("a socket holder failed to start")
        yield [c.pid for c in children]
    finally:
        for child in children:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()
        for child in children:
            child.wait(timeout=60)
        shutil.rmtree(script.parent, ignore_errors=True)


def _stats(osqd: Standin) -> dict[str, str]:
    ((row,),) = (osqd.query("SELECT connections_tracked FROM tracked_connections_stats"),)
    return row


def bench_generate(count: int, args: argparse.Namespace, query: str) -> dict[str, float]:
    """``generate`` over Thrift at ``count`` sockets for ``query`` (see
    :func:`generate_request`): the extension's CPU per call and RSS.

    The extension runs with ``--events off --sample-interval-ms 600000``: it
    samples once at start and then only serves, so its CPU time during the
    calls is what ``generate`` costs it. Floors from the same run: the C
    encoder (thrift's ``fastbinary``) encoding the same rows from ready
    dicts, and sending the reply's bytes over a Unix socket pair to a reader.

    Returns:
        the figures, by name.
    """
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
    out: dict[str, float] = {}
    with held_established(count):
        try:
            osqd.start()
            child = osqd.launch_extension(
                [sys.executable, "-m", "extension", "--state-file", "", "--events", "off",
                 "--sample-interval-ms", "600000"],
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            osqd.wait_for_table(_TABLE, 15)
            deadline = time.monotonic() + 60
            while int(_stats(osqd)["connections_tracked"]) < count:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the table never reached {count} rows")
                time.sleep(0.5)
            uuid = next(u for u, name in osqd.extensions().items() if name == _TABLE)
            path = f"{osqd.socket_path}.{uuid}"
            extension = psutil.Process(child.pid)
            time.sleep(1.0)
            out["rss_before"] = rss_mib(child.pid)
            cpu0 = process_cpu_secs(child.pid)
            start = time.perf_counter()
            request = generate_request(query)
            rows = call_generate(path, request)
            out["first_ms"] = (time.perf_counter() - start) * 1000.0
            out["first_cpu_ms"] = (process_cpu_secs(child.pid) - cpu0) * 1000.0
            out["rss_first"] = rss_mib(child.pid)
            times: list[float] = []
            cpu0 = process_cpu_secs(child.pid)
            for _ in range(args.generate_runs):
                start = time.perf_counter()
                out["rows"] = len(call_generate(path, request))
                times.append(time.perf_counter() - start)
            out["cpu_ms"] = (process_cpu_secs(child.pid) - cpu0) * 1000.0 / args.generate_runs
            out["end_to_end_ms"] = statistics.median(times) * 1000.0
            cpu0, wall0 = process_cpu_secs(child.pid), time.monotonic()
            time.sleep(2.0)
            out["idle_cpu_ms_per_s"] = (process_cpu_secs(child.pid) - cpu0) * 1000.0 / (
                time.monotonic() - wall0)  # fmt: skip
            out["rss_after"] = rss_mib(child.pid)
            out["rss_hwm"] = _peak_rss_mib(extension.pid)
        finally:
            osqd.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    response = ExtensionResponse(status=ExtensionStatus(code=0, message="OK"), response=rows)
    data = encode(response, accelerated=True)
    out["reply_mib"] = len(data) / 2**20
    out["encode_c_ms"] = cpu_ms(lambda: encode(response, accelerated=True), args.generate_runs)
    out["send_ms"] = cpu_ms(lambda: send_over_socketpair(data), args.generate_runs)
    out["send_thrift_ms"] = send_to_thrift_reader(reply_message(response), args.generate_runs)
    return out


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of a process (its highest resident set size), MiB; nan where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def cpu_ms(func: Callable[[], object], runs: int) -> float:
    """Median CPU time of this thread over ``runs`` calls, milliseconds."""
    times = []
    for _ in range(runs):
        start = time.thread_time()
        func()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1000.0


def send_over_socketpair(data: bytes) -> None:
    """Send ``data`` over a Unix stream socket pair while a thread reads it all."""
    left, right = socket.socketpair()
    with left, right:

        def drain() -> None:
            view, got = bytearray(1 << 20), 0
            while got < len(data):
                got += right.recv_into(view)

        reader = threading.Thread(target=drain)
        reader.start()
        left.sendall(data)
        reader.join()


_THRIFT_READER = r"""
import sys
sys.path.insert(0, "benchmarks")
from extension_bench import osquery_client
path, runs = sys.argv[1], int(sys.argv[2])
for _ in range(runs):
    with osquery_client(path) as client:
        client.recv_call()
"""


def reply_message(response: ExtensionResponse) -> bytes:
    """The whole ``call`` reply message carrying ``response``, as osqueryd receives it."""
    buffer = TTransport.TMemoryBuffer()
    protocol: Any = FastBinaryProtocol(buffer)
    protocol.writeMessageBegin("call", TMessageType.REPLY, 0)
    Extension.call_result(success=response).write(protocol)
    protocol.writeMessageEnd()
    return bytes(buffer.getvalue())


def send_to_thrift_reader(message: bytes, runs: int) -> float:
    """Median CPU of sending ``message`` whole, ``runs`` times, to a reader that
    reads it as :func:`call_generate` does (another process, a new
    :func:`osquery_client` each time), milliseconds.

    The floor of the extension's CPU per call with the same reader: what the
    kernel charges the sender to pass the bytes to a reader that takes them a
    few KiB at a time, without any work of the extension's.
    """
    workdir = Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp"))
    path = str(workdir / "reply.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    times: list[float] = []
    try:
        listener.bind(path)
        listener.listen(1)
        reader = subprocess.Popen([sys.executable, "-c", _THRIFT_READER, path, str(runs)],
                                  cwd=REPO)  # fmt: skip
        try:
            for _ in range(runs):
                conn, _ = listener.accept()
                with conn:
                    start = time.thread_time()
                    conn.sendall(message)
                    times.append(time.thread_time() - start)
            if reader.wait(timeout=300) != 0:
                raise RuntimeError(f"the thrift reader exited with {reader.returncode}")
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
    finally:
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return statistics.median(times) * 1000.0


def print_generate(args: argparse.Namespace) -> None:
    """Print the generate figures, each a median of ``--repeat`` runs."""
    print(
        f"\ngenerate over Thrift (extension with --events off, one sample then serving only;"
        f" medians of {args.repeat} runs of {args.generate_runs} calls)",
        flush=True,
    )
    print(
        f"  {'query':>5} {'sockets':>7} {'rows':>6} {'reply MiB':>9} {'CPU/call':>9}"
        f" {'floor: C encode':>15}"
        f" {'floor: send':>11} {'to thrift':>9} {'ratio':>5}"
        f" {'end to end':>10} {'ext share':>9} {'first call':>10}"
        f" {'RSS before':>10} {'after 1st':>9} {'after all':>9} {'peak':>6}"
    )
    for count, query in itertools.product(args.generate_rows, args.generate_queries):
        runs = [bench_generate(count, args, query) for _ in range(args.repeat)]

        def med(name: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[name] for r in runs)

        print(
            f"  {query:>5} {count:7d} {med('rows'):6.0f} {med('reply_mib'):9.2f}"
            f" {med('cpu_ms'):7.2f}ms"
            f" {med('encode_c_ms'):13.2f}ms {med('send_ms'):9.2f}ms"
            f" {med('send_thrift_ms'):7.2f}ms {med('cpu_ms') / med('send_thrift_ms'):4.1f}x"
            f" {med('end_to_end_ms'):8.1f}ms"
            f" {med('cpu_ms') / med('end_to_end_ms'):9.0%} {med('first_cpu_ms'):8.1f}ms"
            f" {med('rss_before'):8.1f}MB {med('rss_first'):7.1f}MB {med('rss_after'):7.1f}MB"
            f" {med('rss_hwm'):4.0f}MB",
            flush=True,
        )
        print(
            f"                (extension idle meanwhile:"
            f" {med('idle_cpu_ms_per_s'):.2f} ms CPU per s;"
            f" first call {med('first_ms'):.1f} ms end to end)",
            flush=True,
        )


def sampler_cpu_per_sample(samples: int) -> float:
    """Mean CPU of the real Sampler per sample (collect, processes, tracker), ms.

    A new collector and sampler; three warm-up samples first (the first
    scans every process's descriptors). The mean over ``samples`` samples,
    since some work is done every few samples only.
    """
    sampler = Sampler(LinuxProcCollector(), sample_interval_ms=250)
    for _ in range(3):
        sampler.sample_once()
    gc.collect()
    start = time.thread_time()
    for _ in range(samples):
        sampler.sample_once()
    return (time.thread_time() - start) / samples * 1000.0


def _kind_figures(args: argparse.Namespace) -> tuple[float, float]:
    """(sampler CPU ms per sample, raw dump CPU ms), each a median of ``--repeat``."""
    sampler = statistics.median(
        sampler_cpu_per_sample(args.kind_samples) for _ in range(args.repeat)
    )
    dump = statistics.median(cpu_ms(raw_dump, args.runs) for _ in range(args.repeat))
    return sampler, dump


def bench_kinds(args: argparse.Namespace) -> None:
    """Sampler CPU per sample by kind of socket, beside the raw sock_diag dump."""
    print(
        f"\nsampler by kind of socket (real Sampler, no kernel events; CPU ms per sample, the"
        f" mean over {args.kind_samples} samples; raw dump: the four sock_diag dumps received,"
        f" nothing decoded; medians of {args.repeat})",
        flush=True,
    )
    print(f"  {'case':34} {'sampler':>8} {'raw dump':>8} {'ratio':>6}   added by the sockets")
    base_sampler, base_dump = _kind_figures(args)
    print(
        f"  {'no sockets':34} {base_sampler:8.2f} {base_dump:8.2f}"
        f" {base_sampler / base_dump:6.2f}"
    )
    results: dict[str, float] = {}

    def row(name: str, sampler: float, dump: float) -> None:
        added_s, added_d = sampler - base_sampler, dump - base_dump
        results[name] = added_s
        print(
            f"  {name:34} {sampler:8.2f} {dump:8.2f} {sampler / dump:6.2f}"
            f"   sampler {added_s:6.2f}, dump {added_d:6.2f} ({added_s / added_d:.2f}x)",
            flush=True,
        )

    for count in args.kind_sockets:
        with held_established(count):
            row(f"{count} established", *_kind_figures(args))
        with held_established(count, shared=True):
            row(f"{count} established, shared by 2 pids", *_kind_figures(args))
            unshared = results[f"{count} established"]
            shared = results[f"{count} established, shared by 2 pids"]
            print(f"    shared / unshared, added by the sockets: {shared / unshared:.2f}x")
    wait_time_wait_below(100)
    made = open_time_wait(args.time_wait_sockets)
    row(f"{made} TIME_WAIT", *_kind_figures(args))


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


_DNS_ANSWERS = """
import ipaddress, socket, sys, time
import dns.message, dns.rrset
def answers():
    out = []
    for n in range(100):
        name = f"host{n}.bench.example."
        query = dns.message.make_query(name, "A" if n % 2 else "AAAA", id=n)
        response = dns.message.make_response(query)
        owner = name
        if n % 3 == 0:
            owner = f"edge{n % 7}.cdn.example."
            response.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", owner))
        if n % 2:
            response.answer.append(dns.rrset.from_text(owner, 60, "IN", "A", f"198.51.100.{n}"))
        else:
            response.answer.append(dns.rrset.from_text(owner, 60, "IN", "AAAA", f"2001:db8::{n:x}"))
        out.append(response.to_wire())
    return out
"""

_DNS_LOAD = _DNS_ANSWERS + """
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
sinks = []
for _ in range(64):  # clients on many ports, as resolvers' lookups come
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setblocking(False)
    sinks.append(sink)
for last in range(1, 20):
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((f"127.0.53.{last}", 53))
        break
    except OSError:
        server.close()
wire = answers()
targets = [sink.getsockname() for sink in sinks]
start = time.monotonic()
n = 0
while time.monotonic() - start < seconds:
    due = start + n / rate
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    sink = sinks[n % 64]
    server.sendto(wire[n % len(wire)], targets[n % 64])
    try:
        while True:
            sink.recv(4096)
    except BlockingIOError:
        pass
    n += 1
"""


def dns_load(rate: int, seconds: float) -> subprocess.Popen[bytes]:
    """A child process sending ``rate`` DNS answers per second from port 53 for ``seconds``."""
    return subprocess.Popen([sys.executable, "-c", _DNS_LOAD, str(rate), str(seconds)])


def _dns_in_process(rate: int) -> None:
    """Parser against dnspython, and drain per packet, on the load's answers."""
    import dns.message  # noqa: PLC0415 - this section only

    from extension.collect.dns_capture import DnsCapture  # noqa: PLC0415
    from extension.collect.dns_wire import parse_answer  # noqa: PLC0415
    from extension.enrich.names import NameCache  # noqa: PLC0415

    scope: dict[str, Any] = {}
    exec(_DNS_ANSWERS, scope)  # the very answers the load sends
    wire: list[bytes] = scope["answers"]()
    ours = median_ms(lambda: [parse_answer(w) for w in wire], 21) * 1000 / len(wire)
    theirs = median_ms(lambda: [dns.message.from_wire(w) for w in wire], 5) * 1000 / len(wire)
    capture = DnsCapture(NameCache())
    capture.start()
    try:
        capture._stop.set()  # measured here, not in its thread
        if capture._thread is not None:
            capture._thread.join()
        capture.drain()
        sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
        for sink in sinks:
            sink.bind(("127.0.0.1", 0))
            sink.setblocking(False)
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.53.99", 53))
        per_packet: list[float] = []
        for _ in range(7):
            for n, w in enumerate(wire * 5):
                server.sendto(w, sinks[n % 64].getsockname())
            time.sleep(0.05)
            start = time.thread_time()  # CPU time: other work on the host does not count
            read = capture.drain()
            per_packet.append((time.thread_time() - start) / max(read, 1) * 1e6)
            for sink in sinks:
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sink.recv(4096)
        server.close()
        for sink in sinks:
            sink.close()
    finally:
        capture.stop()
    drain = statistics.median(per_packet)
    print(
        f"  in-process, per answer: parse {ours:.1f} us, dnspython from_wire {theirs:.1f} us"
        f" ({theirs / ours:.0f}x); drain (read + parse + cache) {drain:.1f} us per packet"
        f" = {drain * rate / 1e4:.2f} % of one core at {rate}/s",
        flush=True,
    )


def _launch(mode: str, workdir: Path) -> tuple[Standin, int]:
    """A stand-in with the extension launched with ``--dns mode``; (stand-in, extension pid)."""
    osqd = Standin(
        str(workdir / "osquery.em"),
        workdir / "logs",
        host_identifier="bench",
        extensions_interval_secs=3,
        extensions_timeout_secs=10,
        ephemeral=True,
    )
    osqd.start()
    command = [sys.executable, "-m", "extension", "--dns", mode]
    command += ["--state-file", str(workdir / "ext.state")]
    child = osqd.launch_extension(command, stderr=subprocess.DEVNULL)
    osqd.wait_for_table(_TABLE, 15)
    return osqd, child.pid


def _shares(pids: dict[str, int], seconds: float, rate: int = 0) -> dict[str, float]:
    """% of one core each pid used over the same ``seconds``, with ``rate`` answers/s."""
    cpu0 = {mode: process_cpu_secs(pid) for mode, pid in pids.items()}
    wall0 = time.monotonic()
    if rate:
        dns_load(rate, seconds).wait()
        time.sleep(0.2)
    else:
        time.sleep(seconds)
    wall = time.monotonic() - wall0
    return {mode: (process_cpu_secs(pid) - cpu0[mode]) / wall * 100.0 for mode, pid in pids.items()}


def bench_dns(args: argparse.Namespace) -> None:
    """Extension CPU with --dns off and on, side by side, idle and at --dns-rate answers/s.

    Both extensions run at once, each under its own stand-in, so whatever
    else the host does weighs on both alike; the figure is their difference.
    """
    print(
        f"\nDNS names: extension CPU (% of one core), --dns off and on side by side, idle and"
        f" with {args.dns_rate} DNS answers/s on loopback; {args.dns_rounds} rounds of"
        f" {args.dns_seconds:g} s each, medians",
        flush=True,
    )
    figures: dict[str, list[dict[str, float]]] = {"idle": [], "load": []}
    workdirs = {mode: Path(tempfile.mkdtemp(prefix="tcb", dir="/tmp")) for mode in ("off", "on")}
    standins: dict[str, Standin] = {}
    try:
        pids: dict[str, int] = {}
        for mode, workdir in workdirs.items():
            standins[mode], pids[mode] = _launch(mode, workdir)
        time.sleep(3.0)  # first samples and scans done
        for _ in range(args.dns_rounds):
            figures["idle"].append(_shares(pids, args.dns_seconds))
            figures["load"].append(_shares(pids, args.dns_seconds, args.dns_rate))
        stats = {
            mode: osqd.query(
                "SELECT source, dns, dns_off_reason, dns_packets_read, dns_answers_parsed,"
                " dns_packets_dropped, dns_cache_size FROM tracked_connections_stats"
            )[0]
            for mode, osqd in standins.items()
        }
    finally:
        for osqd in standins.values():
            osqd.stop()
        for workdir in workdirs.values():
            shutil.rmtree(workdir, ignore_errors=True)
    for mode in ("off", "on"):
        idle = statistics.median(f[mode] for f in figures["idle"])
        load = statistics.median(f[mode] for f in figures["load"])
        runs = ", ".join(f"{f[mode]:.2f}" for f in figures["load"])
        described = ", ".join(f"{k} {v}" for k, v in sorted(stats[mode].items()))
        print(
            f"  dns {mode:3s}: idle {idle:.2f} %, load {load:.2f} % (runs: {runs}); stats:"
            f" {described}",
            flush=True,
        )
    extra = statistics.median(f["on"] - f["off"] for f in figures["load"])
    idle_extra = statistics.median(f["on"] - f["off"] for f in figures["idle"])
    print(
        f"  DNS names cost at {args.dns_rate} answers/s: {extra:+.2f} % of one core"
        f" (median of the rounds' differences; target: 2 or less); idle: {idle_extra:+.2f} %",
        flush=True,
    )
    _dns_in_process(args.dns_rate)


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
        default=[10000, 30000],
        help="socket counts for generate over Thrift (default 10000 30000; none to skip)",
    )
    parser.add_argument(
        "--generate-runs",
        type=int,
        default=20,
        help="generate calls per figure (default 20: the extension's CPU time is read in"
        " 10 ms clock ticks)",
    )
    parser.add_argument(
        "--generate-queries",
        nargs="+",
        choices=("pack", "all"),
        default=["pack", "all"],
        help="the queries generate is called for: the pack's SELECT list, SELECT * (default"
        " both)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each generate and sampler figure (median)"
    )
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
    parser.add_argument(
        "--dns-cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the DNS names section (default on)",
    )
    parser.add_argument(
        "--dns-rate", type=int, default=1000, help="DNS answers per second (default 1000)"
    )
    parser.add_argument(
        "--dns-seconds",
        type=float,
        default=10.0,
        help="seconds measured for each figure of the DNS section (default 10)",
    )
    parser.add_argument(
        "--dns-rounds", type=int, default=3, help="rounds of --dns off and on (default 3)"
    )
    parser.add_argument(
        "--kind-sockets",
        type=int,
        nargs="*",
        default=[10000, 30000],
        help="established sockets for the sampler-by-kind figures (default 10000 30000)",
    )
    parser.add_argument(
        "--kind-samples", type=int, default=48, help="samples per sampler-by-kind figure"
    )
    parser.add_argument(
        "--time-wait-sockets", type=int, default=10000, help="TIME_WAIT sockets (default 10000)"
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run in new pid and network namespaces (unshare(1), root), so that only this"
        " run's sockets and processes are measured on a shared host (default on)",
    )
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        print("this benchmark needs Linux /proc", file=sys.stderr)
        return 2
    isolated = os.environ.get(_ISOLATED) == "1"
    if args.isolate and not isolated:
        if os.geteuid() == 0 and shutil.which("unshare"):
            command = ["unshare", "--pid", "--net", "--mount-proc", "--fork"]
            command += [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])]
            return subprocess.call(command, env={**os.environ, _ISOLATED: "1"})
        print("not isolated (needs root and unshare(1)): other sockets on the host count too")
    if isolated:
        # The first process of a pid namespace ignores SIGTERM without a handler.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        hide_other_namespaces()
    # The sampler's privilege warning and thrift's connection errors while the
    # stand-in stops would interleave with the figures.
    logging.getLogger("extension.sampler").setLevel(logging.ERROR)
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    netlink = netlink_available()
    started = time.monotonic()
    print(
        f"python {sys.version.split()[0]}, psutil {psutil.__version__},"
        f" {psutil.cpu_count()} cpus, {len(psutil.pids())} pids,"
        f" sock_diag netlink {'available' if netlink else 'NOT available'}; times in ms;"
        f" {'own pid and network namespaces' if isolated else 'the host namespaces'};"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    for count in args.sockets:
        bench_collect(count, args, netlink)
    if args.generate_rows:
        print_generate(args)
    if args.kind_sockets:
        bench_kinds(args)  # last: its TIME_WAIT sockets stay for 60 s
    if args.events_cpu:
        bench_events(args)
    if args.dns_cpu:
        bench_dns(args)
    print(f"\ntotal {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
