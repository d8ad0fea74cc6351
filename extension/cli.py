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
from extension.serve import ExtensionServer, ServeError, TrackedConnectionsTable

__all__ = ["build_parser", "main"]

DEFAULT_SOCKET = "/var/osquery/osquery.em"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; osqueryd's flags first, then our own."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-extension",
        description="osquery extension serving the tracked_connections table.",
    )
    parser.add_argument("--socket", default=DEFAULT_SOCKET, help="osqueryd extension socket")
    parser.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the socket (default 3)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=3.0,
        help="seconds between checks that osqueryd is alive (default 3)",
    )
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
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
    table = TrackedConnectionsTable()
    server = ExtensionServer(args.socket, args.timeout, args.interval, table.generate)
    try:
        return server.run()
    except ServeError as err:
        logging.getLogger("extension").error("%s", err)
        return 1
