"""Command line of the alert service: ``tracked-connections-alerts``.

Subcommands:

* ``run --config FILE`` — follow the configured sources until SIGINT/SIGTERM, then
  exit 0: alerts and source checkpoints are committed together to the outbox in
  ``<state_dir>/state.sqlite3``, the delivery workers send them; JSON log lines go to
  stderr. SIGHUP reads the configuration and IOC lists again
  (:mod:`alert_service.operate.reload`). Exit 1 when another ``run`` holds the state
  directory (``state_dir_locked``, naming its pid; :mod:`alert_service.state.lock`),
  a start-up check fails (``preflight_failed``,
  :mod:`alert_service.operate.preflight`), the state database cannot be opened
  (``state_open_failed``) or the ``metrics`` address cannot be bound, e.g. the port
  is taken (``ops_listen_failed``).
* ``status``, ``outbox``, ``silence``, ``test-notifier`` — operator commands
  (:mod:`alert_service.operate.commands`).
* ``check-config FILE`` (or ``--config FILE``, as for ``run`` and ``replay``) — print
  ``OK`` and exit 0 (``--strict``: the host checks of ``run`` too, and the metrics
  port must be free), or list every problem as ``FILE: $.json.path: message`` on stderr
  and exit 1.
* ``replay --config FILE LOG...`` — read the given results logs whole and print each
  alert that ``run`` would deliver as one JSON line on stdout (baseline and dedup
  applied in memory; each suppressed repeat is logged as ``alert_suppressed`` on
  stderr); nothing is sent.
* ``cluster-status FILE`` — print the live instances, each stream partition's lease
  and its consumer's lag as one JSON document (:mod:`alert_service.ops.status`);
  exit 1 when the state cannot be read.
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
import os
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
from alert_service.errors import ConfigError
from alert_service.logs import configure_logging, log_event
from alert_service.match.hostnames import domain_list_warnings
from alert_service.notify import DEFAULT_REGISTRY
from alert_service.notify.preview import RenderDispatcher
from alert_service.operate import commands as operate
from alert_service.operate.preflight import preflight_problems
from alert_service.operate.reload import config_for_reload
from alert_service.ops.config import MetricsConfig
from alert_service.permissions import loose_permissions
from alert_service.pipeline import Pipeline, PrintDispatcher
from alert_service.state.db import StateTarget, open_state
from alert_service.state.lock import LockedError, acquire_instance_lock
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
    check.add_argument(
        "--strict",
        action="store_true",
        help="also check this host: state_dir writable, sources readable (or their"
        " directory exists), metrics port free",
    )

    status = command(
        "cluster-status",
        "show the partitions, leases and consumer lag of a cluster",
        "Print one JSON document: the live instances, and per stream partition its\n"
        "lease (owner, fencing token, expiry) and its consumer's lag (messages not\n"
        "yet delivered) and unacknowledged messages. Reads the shared state and NATS;\n"
        "no instance needs to run.",
        "tracked-connections-alerts cluster-status /etc/tracked-connections/alerts.yaml",
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
    operate.add_commands(sub)
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
    if args.command not in ("run", "check-config", "cluster-status"):
        return
    if args.config and args.config_file and args.config != args.config_file:
        parser.error(f"{args.command}: give the configuration once, as FILE or --config FILE")
    args.config = args.config or args.config_file or os.environ.get(operate.CONFIG_ENV)
    if not args.config:
        parser.error(
            f"{args.command}: the configuration FILE (or --config FILE, or "
            f"${operate.CONFIG_ENV}) is required"
        )


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
    for i, rule in enumerate(config.rules):  # not problems: the service runs with them
        for where, message in domain_list_warnings(rule):
            print(f"WARNING: {args.config}: $.rules[{i}]{where}: {message}", file=sys.stderr)
    if args.strict:
        problems = preflight_problems(config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
    print("OK")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    from alert_service.ops.status import cluster_status  # noqa: PLC0415 - only this command

    try:
        doc = cluster_status(config)
    except (OSError, sqlite3.Error) as err:
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
    stats = Stats()
    state_path = config.state.target(config.state_dir)
    problems = preflight_problems(config, check_port=False)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        log_event(_log, logging.ERROR, "preflight_failed", problems=problems)
        return 1
    if config.state.backend == "postgresql":
        # Instances of a cluster share the state by design; leases and fencing
        # keep them apart, not a lock on this host's state_dir.
        return _run_locked(args, config, stats, state_path)
    try:
        lock = acquire_instance_lock(config.state_dir)
    except LockedError as err:
        log_event(_log, logging.ERROR, "state_dir_locked", path=err.path, pid=err.pid)
        print(f"run: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        where = config.state.describe(config.state_dir)
        log_event(_log, logging.ERROR, "state_open_failed", path=where, reason=str(err))
        return 1
    try:
        return _run_locked(args, config, stats, state_path)
    finally:
        lock.release()


def _run_locked(
    args: argparse.Namespace, config: Config, stats: Stats, state_path: StateTarget
) -> int:
    # What only ``run`` uses (the delivery workers and their HTTP clients, the web
    # console, the metrics server) is imported here, so the other commands start
    # without it.
    from alert_service.console.app import ConsoleApp  # noqa: PLC0415
    from alert_service.deliver.service import build_delivery_service  # noqa: PLC0415
    from alert_service.ops.server import OpsServer  # noqa: PLC0415

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
    wake = threading.Event()  # set by SIGINT/SIGTERM (stop) and SIGHUP (reload)
    stopping: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum != signal.SIGHUP:
            log_event(_log, logging.INFO, "service_stopping", signal=name)
            stopping.append(name)
        else:
            log_event(_log, logging.INFO, "config_reload_requested", signal=name)
        wake.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
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
    console = ConsoleApp(config) if config.console is not None else None
    # The console is served on the ops port: 127.0.0.1:9464 unless ``metrics`` says.
    listen = config.metrics or (MetricsConfig() if console is not None else None)
    ops = (
        OpsServer(listen, delivery.metrics.registry, delivery.health, mount=console)
        if listen is not None
        else None
    )
    try:
        if ops is not None and listen is not None:
            try:
                ops.start()
            except OSError as err:
                log_event(
                    _log,
                    logging.ERROR,
                    "ops_listen_failed",
                    listen_address=listen.listen_address,
                    port=listen.port,
                    reason=str(err),
                )
                return 1
        while True:
            pipeline.run(wake)
            wake.clear()
            if stopping:
                break
            new = config_for_reload(args.config, config)
            if new is None:
                continue
            # Queued alerts are outbox rows: the old workers finish their request in
            # flight, the new ones send the rest with the same ids.
            delivery.stop()
            delivery = build_delivery_service(
                new, state_path, stats=stats, metrics=delivery.metrics
            )
            pipeline = Pipeline(new, stats=stats, state=state)
            delivery.start()
            if ops is not None:
                ops.health = delivery.health
            if console is not None:
                console.config = new
            if not args.log_level:
                logging.getLogger("alert_service").setLevel(new.log_level.upper())
            config = new
            log_event(
                _log,
                logging.INFO,
                "config_reloaded",
                config=config.file,
                sources=[s.path for s in config.sources],
                notifiers=[n.name for n in config.notifiers],
                rules=len(config.rules),
            )
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
    try:
        return _dispatch(args)
    except BrokenPipeError:
        # The reader went away (``status | head``): no traceback; stdout is gone.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "init":
        return _init(args)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "cluster-status":
        return _status(args)
    if args.command in operate.COMMANDS:
        return operate.run_command(args)
    return _run(args)
