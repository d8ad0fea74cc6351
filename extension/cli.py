"""Command line of ``tracked-connections-extension`` (also ``python -m extension``).

Accepts exactly the flags osqueryd passes when it launches an extension
(osquery 5.23 osquery/process/posix/process.cpp ``launchExtension``):
``--socket PATH --timeout N --interval N [--verbose]``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from extension import __version__
from extension.collect import select_collector
from extension.collect.dns_capture import DnsCapture, DnsUnavailableError
from extension.collect.linux_events import (
    DEFAULT_RING_KIB,
    MAX_RINGS_KIB,
    MIN_RING_KIB,
    EventsUnavailableError,
    LinuxEventSource,
)
from extension.enrich.connections import DEFAULT_ATTEMPT_GRACE_SECS
from extension.enrich.names import DEFAULT_TTL_FLOOR_SECS, NameCache
from extension.enrich.process import ProcessTracker
from extension.enrich.saved import DEFAULT_STATE_FILE, RowStore
from extension.memory import tune_allocator
from extension.sampler import (
    DEFAULT_EVENTS_SAMPLE_INTERVAL_MS,
    DEFAULT_LINGER_SECS,
    DEFAULT_SAMPLE_INTERVAL_MS,
    Sampler,
)
from extension.serve import ExtensionServer, ServeError, StatsTable, Table, TrackedConnectionsTable
from extension.serve.server import DEFAULT_STALL_GRACE_SECS

__all__ = ["build_parser", "main"]

DEFAULT_SOCKET = "/var/osquery/osquery.em"


def _seconds(text: str) -> float:
    """argparse type: a number of seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; osqueryd's flags first, then our own."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-extension",
        description="osquery extension serving the tracked_connections table.",
    )
    parser.add_argument(
        "--socket",
        default=DEFAULT_SOCKET,
        help=f"osqueryd's extension socket (default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        help="seconds to wait for the socket (default 3)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=3.0,
        help="seconds between checks that osqueryd is alive (default 3)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    parser.add_argument(
        "--stall-grace-secs",
        type=_seconds,
        default=DEFAULT_STALL_GRACE_SECS,
        help="how long osqueryd may hold its socket without answering before the extension"
        f" exits (default {DEFAULT_STALL_GRACE_SECS:g}); a socket that is gone or refuses"
        " ends it at once",
    )
    parser.add_argument(
        "--events",
        choices=("auto", "on", "off"),
        default="auto",
        help="kernel connection events (Linux, root): auto uses them where the host allows"
        " and says why not otherwise; on refuses to start without them; off samples only"
        " (default auto)",
    )
    parser.add_argument(
        "--events-ring-kib",
        type=_positive_int,
        default=None,
        help=f"kernel event ring per CPU, KiB (default {DEFAULT_RING_KIB}, smaller when"
        f" that many CPUs' rings would exceed {MAX_RINGS_KIB} KiB in all, at least"
        f" {MIN_RING_KIB})",
    )
    parser.add_argument(
        "--dns",
        choices=("auto", "on", "off"),
        default="auto",
        help="remote_hostname from the DNS answers this host receives (Linux, CAP_NET_RAW):"
        " auto reads them where the host allows and says why not otherwise; on refuses to"
        " start without them; off leaves remote_hostname empty (default auto)",
    )
    parser.add_argument(
        "--dns-ttl-floor-secs",
        type=_seconds,
        default=DEFAULT_TTL_FLOOR_SECS,
        help="shortest time a DNS answer is remembered, whatever its TTL"
        f" (default {DEFAULT_TTL_FLOOR_SECS:g})",
    )
    parser.add_argument(
        "--sample-interval-ms",
        type=_positive_int,
        default=None,
        help=f"milliseconds between socket samples (default {DEFAULT_SAMPLE_INTERVAL_MS},"
        f" or {DEFAULT_EVENTS_SAMPLE_INTERVAL_MS} while kernel events run)",
    )
    parser.add_argument(
        "--state-file",
        default=DEFAULT_STATE_FILE,
        help="where the rows already shown to osqueryd are saved, so that a connection that"
        " lives through a restart of the extension or of osqueryd is not logged again"
        f" (default {DEFAULT_STATE_FILE}; '' saves nothing)",
    )
    parser.add_argument(
        "--attempt-grace-secs",
        type=_seconds,
        default=DEFAULT_ATTEMPT_GRACE_SECS,
        help="seconds a connection attempt waits for its outcome before its row is served"
        f" as timed_out (default {DEFAULT_ATTEMPT_GRACE_SECS:g})",
    )
    parser.add_argument(
        "--linger-secs",
        type=_seconds,
        default=DEFAULT_LINGER_SECS,
        help="seconds a closed connection stays in the table, at least twice the pack "
        f"interval (default {DEFAULT_LINGER_SECS:g})",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the extension until osqueryd stops it.

    Returns:
        exit status: 0 after osqueryd's ``shutdown()`` or SIGTERM; 1 when
        osqueryd could not be reached, refused registration, or went away,
        or when ``--events on`` and kernel events are unavailable, or
        ``--dns on`` and DNS answers cannot be read.
    """
    args = build_parser().parse_args(argv)
    tune_allocator()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s tracked_connections[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    log = logging.getLogger("extension")
    processes = ProcessTracker()
    events: LinuxEventSource | None = None
    reason = "turned off (--events off)"
    if args.events != "off":
        events = LinuxEventSource(processes, ring_kib=args.events_ring_kib)
        try:
            events.start()
            reason = ""
            log.info("kernel connection events on")
        except EventsUnavailableError as err:
            events, reason = None, str(err)
            if args.events == "on":
                log.error("kernel events unavailable (--events on): %s", reason)
                return 1
            log.warning("kernel events unavailable, sampling only: %s", reason)
    dns = DnsCapture(NameCache(ttl_floor_secs=args.dns_ttl_floor_secs))
    if args.dns == "off":
        dns.turn_off("turned off (--dns off)")
    else:
        try:
            dns.start()
            log.info("DNS answers read in %d network namespace(s)", dns.stats().namespaces)
        except DnsUnavailableError as err:
            dns.turn_off(str(err))
            if args.dns == "on":
                log.error("DNS answers unavailable (--dns on): %s", err)
                if events is not None:
                    events.stop()
                return 1
            log.warning("DNS answers unavailable, remote_hostname stays empty: %s", err)
    interval = args.sample_interval_ms or (
        DEFAULT_EVENTS_SAMPLE_INTERVAL_MS if events is not None else DEFAULT_SAMPLE_INTERVAL_MS
    )
    sampler = Sampler(
        select_collector(),
        processes,
        sample_interval_ms=interval,
        linger_secs=args.linger_secs,
        events=events,
        events_reason=reason,
        attempt_grace_secs=args.attempt_grace_secs,
        store=RowStore(args.state_file or None),
        dns=dns,
    )
    tables: list[Table] = [TrackedConnectionsTable(sampler), StatsTable(sampler)]
    server = ExtensionServer(
        args.socket, args.timeout, args.interval, tables, stall_grace_secs=args.stall_grace_secs
    )
    sampler.start()
    try:
        return server.run()
    except ServeError as err:
        log.error("%s", err)
        return 1
    finally:
        sampler.stop()
