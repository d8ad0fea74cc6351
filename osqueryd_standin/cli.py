"""Command line of the osqueryd stand-in (a test double, not osquery).

Usage::

    python -m osqueryd_standin --extensions_socket /tmp/tc/osquery.em \\
        --extension "python -m extension" --pack netmon=packs/tracked_connections.conf \\
        --logger_path /tmp/tc/logs --ephemeral

Flags are named like osqueryd's; booleans accept ``--flag``, ``--flag=true``
and ``--flag false``. Runs in the foreground until SIGINT/SIGTERM (or an
extension calls ``shutdown()`` on the manager), then stops like osqueryd:
``shutdown()`` to every extension, then SIGTERM/SIGKILL to launched children.

Startup order: bind the socket, launch ``--extension`` children, wait for
``--extensions_require`` names (osqueryd's behaviour:
upstream osquery 5.23 osquery/core/init.cpp,
osquery/extensions/extensions.cpp), then load packs. Deviation from osqueryd: without
``--extensions_require`` the stand-in still waits up to
``--extensions_timeout`` for as many extensions as it launched to register
before loading packs, so a pack's first discovery check does not run before
its table exists (osqueryd would then skip the pack for
``--pack_refresh_interval``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from osqueryd_standin.standin import Standin

__all__ = ["build_parser", "main", "parse_bool"]

log = logging.getLogger("osqueryd_standin")


def parse_bool(text: str) -> bool:
    """gflags-style boolean: true/false, t/f, yes/no, y/n, 1/0 (any case).

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    low = text.strip().lower()
    if low in ("true", "t", "yes", "y", "1"):
        return True
    if low in ("false", "f", "no", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _add_bool(parser: argparse.ArgumentParser, name: str, default: bool, text: str) -> None:
    parser.add_argument(
        f"--{name}",
        type=parse_bool,
        nargs="?",
        const=True,
        default=default,
        metavar="BOOL",
        help=f"{text} (default {str(default).lower()})",
    )


def _pack_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _version() -> str:
    """The installed tracked-connections version ("unknown" in a bare source tree)."""
    try:
        return importlib.metadata.version("tracked-connections")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flags named like osqueryd's)."""
    p = argparse.ArgumentParser(
        prog="osqueryd-standin",
        description="osqueryd stand-in for tests and demos. This is NOT osquery.",
    )
    p.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {_version()} (a test double for osqueryd, not osquery)",
    )
    p.add_argument(
        "--extensions_socket",
        default="/var/osquery/osquery.em",
        help="extension manager UNIX socket path",
    )
    p.add_argument(
        "--extension",
        action="append",
        default=[],
        metavar="CMD",
        help="extension to launch: a path or a quoted command (shlex); repeatable",
    )
    p.add_argument(
        "--extensions_require",
        default="",
        help="comma-separated extension names to wait for before loading packs",
    )
    p.add_argument(
        "--extensions_interval",
        type=float,
        default=3.0,
        help="seconds between extension health checks (default 3)",
    )
    p.add_argument(
        "--extensions_timeout",
        type=float,
        default=3.0,
        help="seconds to wait for an extension socket/registration (default 3)",
    )
    p.add_argument(
        "--pack",
        action="append",
        default=[],
        type=_pack_spec,
        metavar="NAME=PATH",
        help="pack file to schedule; repeatable",
    )
    p.add_argument(
        "--config_path", default=None, help='osquery.conf-style JSON; only its "packs" map is read'
    )
    p.add_argument(
        "--logger_path", default="/var/log/osquery/", help="directory for osqueryd.results.log"
    )
    p.add_argument(
        "--host_identifier",
        default="hostname",
        help="hostIdentifier value; 'hostname' (default) means this host's name",
    )
    _add_bool(p, "logger_event_type", True, "one line per row (false: batch format)")
    _add_bool(p, "logger_snapshot_event_type", False, "one line per snapshot row")
    _add_bool(p, "logger_numerics", False, "numbers as JSON numbers")
    _add_bool(p, "logger_rotate", False, "rotate result logs")
    p.add_argument(
        "--logger_rotate_size", type=int, default=25 * 1024 * 1024, help="rotate at this many bytes"
    )
    p.add_argument("--logger_rotate_max_files", type=int, default=25, help="rotated files to keep")
    p.add_argument("--logger_mode", default="0640", help="octal mode of log files")
    p.add_argument(
        "--database_path", default=None, help="directory where differential state is saved"
    )
    _add_bool(p, "ephemeral", False, "do not load or save differential state")
    _add_bool(p, "disable_database", False, "same as --ephemeral")
    p.add_argument("--schedule_epoch", type=int, default=0, help="epoch in result lines")
    p.add_argument("--schedule_splay_percent", type=int, default=10, help="interval splay %%")
    p.add_argument(
        "--schedule_default_interval",
        type=int,
        default=3600,
        help="interval of queries without one, seconds",
    )
    p.add_argument("--pack_delimiter", default="_", help="delimiter in logged query names")
    p.add_argument(
        "--pack_refresh_interval",
        type=float,
        default=3600.0,
        help="seconds between discovery re-checks",
    )
    _add_bool(p, "decorations_top_level", False, "flatten decorations into the line")
    p.add_argument(
        "--thrift_timeout",
        type=float,
        default=300.0,
        help="seconds before a call to an extension fails",
    )
    _add_bool(p, "verbose", False, "debug logging; also passed to extensions")
    return p


def _packs_from_config(path: str) -> list[tuple[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    packs = data.get("packs") if isinstance(data, dict) else None
    if not isinstance(packs, dict):
        return []
    return [(str(name), value) for name, value in packs.items()]


def _wait_for_launched(osqd: Standin, count: int, timeout_secs: float) -> None:
    deadline = time.monotonic() + timeout_secs
    while len(osqd.extensions()) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in in the foreground.

    Returns:
        0 after a clean stop, 1 when startup fails.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("thrift").setLevel(logging.CRITICAL)
    host = None if args.host_identifier == "hostname" else args.host_identifier
    osqd = Standin(
        args.extensions_socket,
        args.logger_path,
        host_identifier=host,
        extensions_interval_secs=args.extensions_interval,
        extensions_timeout_secs=args.extensions_timeout,
        verbose=args.verbose,
        logger_event_type=args.logger_event_type,
        logger_numerics=args.logger_numerics,
        database_path=args.database_path,
        epoch=args.schedule_epoch,
        ephemeral=args.ephemeral or args.disable_database,
        decorations_top_level=args.decorations_top_level,
        logger_snapshot_event_type=args.logger_snapshot_event_type,
        logger_mode=int(args.logger_mode, 8),
        logger_rotate=args.logger_rotate,
        logger_rotate_size=args.logger_rotate_size,
        logger_rotate_max_files=args.logger_rotate_max_files,
        pack_delimiter=args.pack_delimiter,
        schedule_splay_percent=args.schedule_splay_percent,
        schedule_default_interval=args.schedule_default_interval,
        pack_refresh_interval_secs=args.pack_refresh_interval,
        thrift_timeout_secs=args.thrift_timeout,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("Received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        osqd.start()
    except OSError as exc:
        log.error("Cannot start the extension manager on %s: %s", args.extensions_socket, exc)
        return 1
    try:
        for ext in args.extension:
            osqd.launch_extension(shlex.split(ext))
        required = [n.strip() for n in args.extensions_require.split(",") if n.strip()]
        for name in required:
            try:
                osqd.wait_for_extension(name, args.extensions_timeout)
            except TimeoutError as exc:
                log.error("An error occurred during extension manager startup: %s", exc)
        if not required and args.extension:
            _wait_for_launched(osqd, len(args.extension), args.extensions_timeout)
        packs: list[tuple[str, Any]] = []
        if args.config_path:
            packs += _packs_from_config(args.config_path)
        packs += list(args.pack)
        for name, source in packs:
            try:
                osqd.add_pack(name, source)
            except (OSError, ValueError) as exc:
                log.error("Cannot load pack %s: %s", name, exc)
        while not stop.wait(0.2):
            if osqd.shutdown_requested.is_set():
                break
    finally:
        osqd.stop()
    return 0
