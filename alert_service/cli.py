"""Command line of the alert service: ``tracked-connections-alerts``.

Subcommands:

* ``run --config FILE`` — follow the configured sources and send alerts until
  SIGINT/SIGTERM, then exit 0; JSON log lines go to stderr.
* ``check-config FILE`` — print ``OK`` and exit 0, or list every problem as
  ``FILE: $.json.path: message`` on stderr and exit 1.
* ``replay --config FILE LOG...`` — read the given results logs whole and print each
  alert that would fire as one JSON line on stdout; nothing is sent.

Exit codes: 0 success, 1 invalid config or unreadable log, 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from alert_service import __version__
from alert_service.config import Config, load_config
from alert_service.errors import ConfigError
from alert_service.logs import configure_logging, log_event
from alert_service.pipeline import NotifyDispatcher, Pipeline, PrintDispatcher, build_notifiers
from alert_service.stats import Stats

__all__ = ["build_parser", "main"]

_log = logging.getLogger("alert_service.cli")
_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (subcommands ``run``, ``check-config``, ``replay``)."""
    parser = argparse.ArgumentParser(
        prog="tracked-connections-alerts",
        description="Follow osquery tracked_connections results and send alerts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="follow the sources and send alerts until stopped")
    run.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    run.add_argument("--log-level", choices=_LEVELS, help="override the config's log_level")

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("config", metavar="FILE", help="YAML configuration")

    replay = sub.add_parser("replay", help="print the alerts that LOG files would fire")
    replay.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    replay.add_argument("--log-level", choices=_LEVELS, help="override the config's log_level")
    replay.add_argument("logs", nargs="+", metavar="LOG", help="results log files")
    return parser


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    if _load(args.config) is None:
        return 1
    print("OK")
    return 0


def _replay(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_level or config.log_level)
    stats = Stats()
    pipeline = Pipeline(config, PrintDispatcher(sys.stdout.buffer), stats)
    failed = pipeline.replay(args.logs)
    log_event(_log, logging.INFO, "replay_finished", files=len(args.logs), **stats.as_dict())
    return 1 if failed else 0


def _run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    configure_logging(args.log_level or config.log_level)
    stop = threading.Event()
    stats = Stats()
    dispatcher = NotifyDispatcher(build_notifiers(config), config.delivery, stats, wait=stop.wait)
    pipeline = Pipeline(config, dispatcher, stats)

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
        notifiers=[n.name for n in config.notifiers],
        rules=len(config.rules),
    )
    try:
        pipeline.run(stop)
    finally:
        dispatcher.close()
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
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "replay":
        return _replay(args)
    return _run(args)
