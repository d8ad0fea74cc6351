"""Command line of ``tracked-connections-extension`` (also ``python -m extension``).

Accepts exactly the flags osqueryd passes when it launches an extension
(osquery-protocol-and-logs.md §2; osquery/process/posix/process.cpp):
``--socket PATH --timeout N --interval N [--verbose]``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from extension import __version__
from extension.collect import select_collector
from extension.sampler import DEFAULT_LINGER_SECS, DEFAULT_SAMPLE_INTERVAL_MS, Sampler
from extension.serve import ExtensionServer, ServeError, StatsTable, Table, TrackedConnectionsTable

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
        "--sample-interval-ms",
        type=int,
        default=DEFAULT_SAMPLE_INTERVAL_MS,
        help=f"milliseconds between socket samples (default {DEFAULT_SAMPLE_INTERVAL_MS})",
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
        osqueryd could not be reached, refused registration, or went away.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s tracked_connections[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    # communityid logs every hash it computes at INFO.
    logging.getLogger("communityid").setLevel(logging.WARNING)
    sampler = Sampler(
        select_collector(),
        sample_interval_ms=args.sample_interval_ms,
        linger_secs=args.linger_secs,
    )
    tables: list[Table] = [TrackedConnectionsTable(sampler), StatsTable(sampler)]
    server = ExtensionServer(args.socket, args.timeout, args.interval, tables)
    sampler.start()
    try:
        return server.run()
    except ServeError as err:
        logging.getLogger("extension").error("%s", err)
        return 1
    finally:
        sampler.stop()
