"""Command line of the alert service: ``tracked-connections-alerts``.

Subcommands:

* ``run --config FILE`` — follow the configured sources until SIGINT/SIGTERM, then
  exit 0: alerts and source checkpoints are committed together to the outbox in
  ``<state_dir>/state.sqlite3``, the delivery workers send them; JSON log lines go to
  stderr. Exit 1 when the state database cannot be opened (``state_open_failed``) or
  the ``metrics`` address cannot be bound, e.g. the port is taken
  (``ops_listen_failed``).
* ``check-config FILE`` (or ``--config FILE``, as for ``run`` and ``replay``) — print
  ``OK`` and exit 0, or list every problem as ``FILE: $.json.path: message`` on stderr
  and exit 1.
* ``replay --config FILE LOG...`` — read the given results logs whole and print each
  alert that would fire as one JSON line on stdout; nothing is sent.
* ``status FILE`` — print the live instances, each stream partition's lease and its
  consumer's lag as one JSON document (:mod:`alert_service.ops.status`); exit 1 when
  the state cannot be read.
* ``init DIR [--force]`` — write the packs, configs, systemd unit and docs shipped in
  the package into DIR (see :mod:`alert_service.bundle`); exit 1 when files exist
  and ``--force`` is not given.

Exit codes: 0 success; 1 invalid config, unreadable log (``replay``), state database
that cannot be opened or metrics port that cannot be bound (``run``); 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from alert_service import __version__
from alert_service.bundle import BundleError, write_bundle
from alert_service.config import Config, load_config
from alert_service.deliver.service import build_delivery_service
from alert_service.errors import ConfigError
from alert_service.logs import configure_logging, log_event
from alert_service.notify import DEFAULT_REGISTRY
from alert_service.notify.preview import RenderDispatcher
from alert_service.ops.server import OpsServer
from alert_service.ops.status import cluster_status
from alert_service.permissions import loose_permissions
from alert_service.pipeline import Pipeline, PrintDispatcher
from alert_service.state.db import open_state
from alert_service.stats import Stats

__all__ = ["build_parser", "main"]

_log = logging.getLogger("alert_service.cli")
_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser (subcommands ``run``, ``check-config``, ``status``, ``replay``)."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-alerts",
        description="Follow osquery tracked_connections results and send alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command(
        "run",
        "follow the sources and send alerts until stopped",
        "Follow the configured result logs, match the rules and deliver alerts\n"
        "through the outbox in <state_dir>/state.sqlite3 until SIGINT/SIGTERM.",
        "tracked-connections-alerts run /etc/tracked-connections/alerts.yaml",
    )
    _config_arguments(run)
    run.add_argument("--log-level", choices=_LEVELS, help="override the config's log_level")

    check = command(
        "check-config",
        "validate a configuration file",
        "Print OK and exit 0, or list every problem as FILE: $.path: message and exit 1.",
        "tracked-connections-alerts check-config /etc/tracked-connections/alerts.yaml",
    )
    _config_arguments(check)

    status = command(
        "status",
        "show the partitions, leases and consumer lag of a cluster",
        "Print one JSON document: the live instances, and per stream partition its\n"
        "lease (owner, fencing token, expiry) and its consumer's lag (messages not\n"
        "yet delivered) and unacknowledged messages. Reads the shared state and NATS;\n"
        "no instance needs to run.",
        "tracked-connections-alerts status /etc/tracked-connections/alerts.yaml",
    )
    _config_arguments(status)

    replay = command(
        "replay",
        "print the alerts that LOG files would fire",
        "Read whole results logs and print each alert that would fire as one JSON\n"
        "line on stdout. Nothing is sent and no state is kept. The configuration is\n"
        "--config FILE, or else the first path.",
        "tracked-connections-alerts replay alerts.yaml /var/log/osquery/osqueryd.results.log",
    )
    replay.add_argument("--config", metavar="FILE", help="YAML configuration")
    replay.add_argument("--log-level", choices=_LEVELS, help="override the config's log_level")
    replay.add_argument(
        "--render",
        action="store_true",
        help="print each notifier's rendered payload instead of the alert (still sends nothing)",
    )
    replay.add_argument("logs", nargs="+", metavar="[FILE] LOG", help="results log files")

    init = command(
        "init",
        "write the packs, configs, systemd unit and docs into DIR",
        "Write the files a deployment needs into DIR: packs/, deploy/ (alerts.yaml,\n"
        "the systemd unit, osquery flags), examples/alerts.example.yaml and docs/.\n"
        "Existing files are left alone unless --force.",
        "tracked-connections-alerts init /usr/share/doc/tracked-connections",
    )
    init.add_argument("dir", metavar="DIR", help="directory to write into (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """The configuration as ``FILE`` or ``--config FILE`` (one of them)."""
    parser.add_argument("config_file", nargs="?", metavar="FILE", help="YAML configuration")
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (same as FILE)")


def _resolve_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Set ``args.config`` from FILE or --config; a usage error (exit 2) otherwise."""
    if args.command == "replay":
        if args.config is None:
            if len(args.logs) < 2:
                parser.error("replay: give the configuration FILE (or --config FILE) and a LOG")
            args.config, args.logs = args.logs[0], args.logs[1:]
        return
    if args.command not in ("run", "check-config", "status"):
        return
    if args.config and args.config_file and args.config != args.config_file:
        parser.error(f"{args.command}: give the configuration once, as FILE or --config FILE")
    args.config = args.config or args.config_file
    if not args.config:
        parser.error(f"{args.command}: the configuration FILE (or --config FILE) is required")


def _init(args: argparse.Namespace) -> int:
    try:
        written = write_bundle(Path(args.dir), force=args.force)
    except BundleError as err:
        print(f"init: {err}", file=sys.stderr)
        return 1
    target = Path(args.dir).resolve()
    print(
        f"wrote {len(written.files)} files to {target}"
        + (f" ({len(written.overwritten)} overwritten)" if written.overwritten else "")
    )
    print(f"next: edit {target / 'deploy' / 'alerts.yaml'}, then")
    print(f"  tracked-connections-alerts check-config {target / 'deploy' / 'alerts.yaml'}")
    print(f"and follow {target / 'docs' / 'deploy.md'}")
    return 0


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    for problem in loose_permissions(config):
        print(f"WARNING: {problem}", file=sys.stderr)
    print("OK")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    try:
        doc = cluster_status(config)
    except sqlite3.Error as err:
        where = config.state.describe(config.state_dir)
        print(f"{args.config}: cannot read the state ({where}): {err}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2))
    return 0


def _replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_level or config.log_level)
    stats = Stats()
    dispatcher: PrintDispatcher | RenderDispatcher = PrintDispatcher(sys.stdout.buffer)
    if args.render:
        notifiers = {
            n.name: DEFAULT_REGISTRY.create(n.name, n.type, n.options) for n in config.notifiers
        }
        dispatcher = RenderDispatcher(notifiers, sys.stdout.buffer)
    pipeline = Pipeline(config, dispatcher, stats)
    try:
        failed = pipeline.replay(args.logs)
    finally:
        dispatcher.close()
    log_event(_log, logging.INFO, "replay_finished", files=len(args.logs), **stats.as_dict())
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_level or config.log_level)
    for problem in loose_permissions(config):
        log_event(_log, logging.WARNING, "file_permissions_loose", reason=problem)
    stop = threading.Event()
    stats = Stats()
    state_path = config.state.target(config.state_dir)
    where = config.state.describe(config.state_dir)
    try:
        state = open_state(state_path)
    except (OSError, sqlite3.Error) as err:
        log_event(_log, logging.ERROR, "state_open_failed", path=where, reason=str(err))
        return 1
    # The pipeline only enqueues alerts (same transaction as the checkpoints); the
    # delivery workers send the outbox from their own connections.
    delivery = build_delivery_service(config, state_path, stats=stats)
    pipeline = Pipeline(config, stats=stats, state=state)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log_event(_log, logging.INFO, "service_stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    log_event(
        _log,
        logging.INFO,
        "service_started",
        version=__version__,
        config=config.file,
        sources=[s.path for s in config.sources],
        state=where,
        notifiers=[n.name for n in config.notifiers],
        rules=len(config.rules),
    )
    delivery.start()
    ops = (
        OpsServer(config.metrics, delivery.metrics.registry, delivery.health)
        if config.metrics is not None
        else None
    )
    try:
        if ops is not None:
            try:
                ops.start()
            except OSError as err:
                log_event(
                    _log,
                    logging.ERROR,
                    "ops_listen_failed",
                    listen_address=config.metrics.listen_address if config.metrics else "",
                    port=config.metrics.port if config.metrics else 0,
                    reason=str(err),
                )
                return 1
        pipeline.run(stop)
    finally:
        if ops is not None:
            ops.stop()
        delivery.stop()
        state.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log_event(_log, logging.INFO, "service_stopped", **stats.as_dict())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit code (see the module docs).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_config(parser, args)
    if args.command == "init":
        return _init(args)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "status":
        return _status(args)
    return _run(args)
