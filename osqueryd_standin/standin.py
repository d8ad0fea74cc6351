"""The :class:`Standin` facade: an osqueryd stand-in for tests and the demo.

This is NOT osquery. It is a small Python test double that speaks osqueryd's
extension protocol and writes osqueryd's result log format, so the project's
extension and alert service can be exercised where osqueryd cannot be
installed. See docs/standin.md for what it does and does not emulate; every
behaviour is taken from the upstream osquery 5.23 source files cited in each
module (summarised in docs/design/osquery-interfaces.md).

Typical use::

    with Standin("/tmp/tc/osquery.em", "/tmp/tc/logs") as osqd:
        osqd.launch_extension([sys.executable, "-m", "extension"])
        osqd.wait_for_table("tracked_connections", 10)
        osqd.add_pack("netmon", "packs/tracked_connections.conf")
        ...
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from osqueryd_standin import launcher
from osqueryd_standin.client import (
    CallResult,
    ExtensionCallError,
    call_extension,
    extension_socket_path,
    ping_extension,
)
from osqueryd_standin.differential import DiffStore
from osqueryd_standin.health import HealthChecker
from osqueryd_standin.manager import ManagerHandler, ManagerServer, OptionValue, thrift_safe
from osqueryd_standin.packs import EMULATED_OSQUERY_VERSION, Pack, load_pack
from osqueryd_standin.registry import Registry
from osqueryd_standin.results_log import LogFormat, ResultsLogWriter
from osqueryd_standin.routes import OPT_INDEX, ColumnDef
from osqueryd_standin.scheduler import Scheduler
from osqueryd_standin.sqlengine import BuiltinTable, SqlEngine
from osqueryd_standin.values import BIGINT, INTEGER, TEXT

__all__ = ["Standin"]

log = logging.getLogger("osqueryd_standin")

_REGISTRY_COLUMNS = (
    ColumnDef("registry", TEXT, OPT_INDEX),
    ColumnDef("name", TEXT, OPT_INDEX),
    ColumnDef("owner_uuid", INTEGER, OPT_INDEX),
    ColumnDef("internal", INTEGER, OPT_INDEX),
    ColumnDef("active", INTEGER, OPT_INDEX),
)
_EXTENSIONS_COLUMNS = (
    ColumnDef("uuid", BIGINT, OPT_INDEX),
    ColumnDef("name", TEXT, OPT_INDEX),
    ColumnDef("version", TEXT, OPT_INDEX),
    ColumnDef("sdk_version", TEXT, OPT_INDEX),
    ColumnDef("path", TEXT, OPT_INDEX),
    ColumnDef("type", TEXT, OPT_INDEX),
)


def _bool_flag(value: bool) -> str:
    return "true" if value else "false"


class Standin:
    """An osqueryd stand-in: extension manager, SQL, scheduler and result log.

    Args:
        socket_path: ``--extensions_socket`` (a UNIX socket path, ≤ ~107 bytes).
        logger_path: ``--logger_path`` directory for osqueryd.results.log.
        host_identifier: ``hostIdentifier`` in result lines (default: hostname).
        extensions_interval_secs: ``--extensions_interval``, seconds.
        extensions_timeout_secs: ``--extensions_timeout``, seconds.
        verbose: ``--verbose`` (also passed to launched extensions).
        logger_event_type: ``--logger_event_type`` (False: batch format).
        logger_numerics: ``--logger_numerics``.
        database_path: directory for saved differential state; None keeps it
            in memory only.
        epoch: ``--schedule_epoch``.
        decorations: decoration name → value added to every result line.
        ephemeral: ``--ephemeral``: ignore ``database_path``.
        decorations_top_level: ``--decorations_top_level``.
        logger_snapshot_event_type: ``--logger_snapshot_event_type``.
        logger_mode: ``--logger_mode`` as an int (0o640).
        logger_rotate: ``--logger_rotate``.
        logger_rotate_size: ``--logger_rotate_size``, bytes.
        logger_rotate_max_files: ``--logger_rotate_max_files``.
        pack_delimiter: ``--pack_delimiter``.
        schedule_splay_percent: ``--schedule_splay_percent``.
        schedule_default_interval: ``--schedule_default_interval``, seconds.
        pack_refresh_interval_secs: ``--pack_refresh_interval``, seconds.
        run_scheduler: start the once-a-second scheduler thread (tests that
            drive runs with :meth:`run_scheduled_once` pass False).
        clock: unix time in seconds, for result lines and scheduling.
        thrift_timeout_secs: ``--thrift_timeout`` for calls to extensions.
        shutdown_grace_secs: after ``shutdown()`` calls, how long
            :meth:`stop` waits for children to exit on their own.
        kill_grace_secs: SIGTERM → SIGKILL delay (osqueryd: 11 s).
    """

    def __init__(  # noqa: PLR0917 (the documented positional API)
        self,
        socket_path: str,
        logger_path: str | os.PathLike[str],
        host_identifier: str | None = None,
        extensions_interval_secs: float = 3,
        extensions_timeout_secs: float = 3,
        verbose: bool = False,
        logger_event_type: bool = True,
        logger_numerics: bool = False,
        database_path: str | None = None,
        epoch: int = 0,
        decorations: dict[str, str] | None = None,
        *,
        ephemeral: bool = False,
        decorations_top_level: bool = False,
        logger_snapshot_event_type: bool = False,
        logger_mode: int = 0o640,
        logger_rotate: bool = False,
        logger_rotate_size: int = 25 * 1024 * 1024,
        logger_rotate_max_files: int = 25,
        pack_delimiter: str = "_",
        schedule_splay_percent: int = 10,
        schedule_default_interval: int = 3600,
        pack_refresh_interval_secs: float = 3600.0,
        run_scheduler: bool = True,
        clock: Callable[[], float] = time.time,
        thrift_timeout_secs: float = 300.0,
        shutdown_grace_secs: float = 3.0,
        kill_grace_secs: float = 11.0,
    ) -> None:
        self.socket_path = str(socket_path)
        self.logger_path = Path(logger_path)
        self.host_identifier = host_identifier or socket.gethostname()
        self.extensions_interval_secs = extensions_interval_secs
        self.extensions_timeout_secs = extensions_timeout_secs
        self.verbose = verbose
        self.thrift_timeout_secs = thrift_timeout_secs
        self.shutdown_grace_secs = shutdown_grace_secs
        self.kill_grace_secs = kill_grace_secs
        self._run_scheduler = run_scheduler
        self._pack_delimiter = pack_delimiter
        self._splay_percent = schedule_splay_percent
        self._default_interval = schedule_default_interval
        self._pack_refresh = pack_refresh_interval_secs
        self._splays: dict[str, tuple[int, int]] = {}
        self._children: list[subprocess.Popen[bytes]] = []
        self._children_lock = threading.Lock()
        self._started = False
        self._stopped = False

        self._options: dict[str, OptionValue] = {
            "extensions_socket": (self.socket_path, "/var/osquery/osquery.em", "string"),
            "extensions_interval": (launcher.flag_seconds(extensions_interval_secs), "3", "string"),
            "extensions_timeout": (launcher.flag_seconds(extensions_timeout_secs), "3", "string"),
            "logger_plugin": ("filesystem", "filesystem", "string"),
            "logger_path": (str(self.logger_path), "/var/log/osquery/", "string"),
            "logger_event_type": (_bool_flag(logger_event_type), "true", "bool"),
            "logger_snapshot_event_type": (_bool_flag(logger_snapshot_event_type), "false", "bool"),
            "logger_numerics": (_bool_flag(logger_numerics), "false", "bool"),
            "logger_mode": (f"0{logger_mode:o}", "0640", "string"),
            "logger_rotate": (_bool_flag(logger_rotate), "false", "bool"),
            "logger_rotate_size": (str(logger_rotate_size), str(25 * 1024 * 1024), "uint64"),
            "logger_rotate_max_files": (str(logger_rotate_max_files), "25", "uint64"),
            "host_identifier": (self.host_identifier, "hostname", "string"),
            "schedule_epoch": (str(epoch), "0", "uint64"),
            "schedule_splay_percent": (str(schedule_splay_percent), "10", "uint64"),
            "schedule_default_interval": (str(schedule_default_interval), "3600", "uint64"),
            "pack_delimiter": (pack_delimiter, "_", "string"),
            "pack_refresh_interval": (str(int(pack_refresh_interval_secs)), "3600", "uint64"),
            "database_path": (database_path or "", "/var/osquery/osquery.db", "string"),
            "ephemeral": (_bool_flag(ephemeral), "false", "bool"),
            "decorations_top_level": (_bool_flag(decorations_top_level), "false", "bool"),
            "thrift_timeout": (str(int(thrift_timeout_secs)), "300", "uint32"),
            "nullvalue": ("", "", "string"),
            "verbose": (_bool_flag(verbose), "false", "bool"),
        }

        builtins = [
            BuiltinTable("osquery_registry", _REGISTRY_COLUMNS, self._registry_rows),
            BuiltinTable("osquery_extensions", _EXTENSIONS_COLUMNS, self._extension_rows),
        ]
        self.registry = Registry(b.name for b in builtins)
        self.engine = SqlEngine(self.registry, self._call, builtins)
        self._handler = ManagerHandler(
            self.registry, self.engine, lambda: self._options, {b.name: b for b in builtins}
        )
        self._server = ManagerServer(self.socket_path, self._handler)
        self._health = HealthChecker(
            self.registry,
            self.socket_path,
            extensions_interval_secs,
            extensions_timeout_secs,
            thrift_timeout_secs,
        )
        self.writer = ResultsLogWriter(
            self.logger_path,
            mode=logger_mode,
            rotate=logger_rotate,
            rotate_size=logger_rotate_size,
            rotate_max_files=logger_rotate_max_files,
        )
        self.store = DiffStore(None if ephemeral else database_path)
        self.log_format = LogFormat(
            host_identifier=self.host_identifier,
            epoch=epoch,
            numerics=logger_numerics,
            event_type=logger_event_type,
            snapshot_event_type=logger_snapshot_event_type,
            decorations=dict(decorations or {}),
            decorations_top_level=decorations_top_level,
        )
        self.scheduler = Scheduler(self.engine, self.store, self.writer, self.log_format, clock)

    # Built-in tables -----------------------------------------------------
    def _registry_rows(self) -> list[dict[str, str]]:
        return [{k: str(v) for k, v in row.items()} for row in self.registry.registry_rows()]

    def _extension_rows(self) -> list[dict[str, str]]:
        rows = [
            {
                "uuid": "0",
                "name": "core",
                "version": EMULATED_OSQUERY_VERSION,
                "sdk_version": "0.0.0",
                "path": self.socket_path,
                "type": "core",
            }
        ]
        for uuid, rec in sorted(self.registry.extensions().items()):
            rows.append(
                {
                    "uuid": str(uuid),
                    "name": rec.name,
                    "version": rec.version,
                    "sdk_version": rec.sdk_version,
                    "path": extension_socket_path(self.socket_path, uuid),
                    "type": "extension",
                }
            )
        return rows

    def _call(self, uuid: int, registry: str, item: str, request: Mapping[str, str]) -> CallResult:
        path = extension_socket_path(self.socket_path, uuid)
        return call_extension(path, registry, item, request, self.thrift_timeout_secs)

    # Lifecycle -------------------------------------------------------------
    @property
    def results_log_path(self) -> Path:
        """``<logger_path>/osqueryd.results.log``."""
        return self.writer.results_path

    @property
    def snapshots_log_path(self) -> Path:
        """``<logger_path>/osqueryd.snapshots.log``."""
        return self.writer.snapshots_path

    @property
    def shutdown_requested(self) -> threading.Event:
        """Set when an extension called ``shutdown()`` on the manager."""
        return self._handler.shutdown_requested

    @property
    def children(self) -> list[subprocess.Popen[bytes]]:
        """Processes started by :meth:`launch_extension`."""
        with self._children_lock:
            return list(self._children)

    def start(self) -> None:
        """Create the results log, bind the socket, start health and scheduler.

        Raises:
            OSError: the socket cannot be bound or the log not created.
        """
        if self._started:
            return
        self.writer.start()
        self._server.start()
        self._health.start()
        if self._run_scheduler:
            self.scheduler.start()
        self._started = True
        log.info("osqueryd stand-in listening on %s", self.socket_path)

    def stop(self) -> None:
        """Stop like osqueryd: ``shutdown()`` to extensions, then stop children.

        Order: scheduler and health threads stop; every registered extension
        gets ``shutdown()``; children get up to ``shutdown_grace_secs`` to
        exit; the manager socket closes; remaining children get SIGTERM, then
        SIGKILL after ``kill_grace_secs``. Safe to call twice.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self.scheduler.stop()
            self._health.stop()
            self._health.shutdown_all()
            deadline = time.monotonic() + self.shutdown_grace_secs
            for child in self.children:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    child.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    break
            self._server.stop()
        launcher.stop_children(self.children, self.kill_grace_secs)

    def __enter__(self) -> Standin:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Extensions ------------------------------------------------------------
    def launch_extension(
        self,
        cmd: Sequence[str] | str,
        *,
        extra_env: Mapping[str, str] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Launch an extension as osqueryd would.

        Args:
            cmd: a path, or a command list (e.g. ``[sys.executable, "-m",
                "extension"]``); ``[--verbose] --socket S --timeout T
                --interval I`` are appended.
            extra_env: added to the inherited environment (besides
                ``OSQUERY_EXTENSION=<pid>``).
            stdout: Popen stdout (default: inherited).
            stderr: Popen stderr (default: inherited).

        Returns:
            The child process; :meth:`stop` terminates it.
        """
        argv = launcher.build_argv(
            cmd,
            self.socket_path,
            self.extensions_timeout_secs,
            self.extensions_interval_secs,
            self.verbose,
        )
        child = launcher.launch(argv, extra_env, stdout, stderr)
        with self._children_lock:
            self._children.append(child)
        return child

    def wait_for_table(self, name: str, timeout_secs: float) -> None:
        """Wait until a table of that name is attached and usable.

        Usable means registered and its extension answers ``ping`` on
        ``<socket>.<uuid>`` (the SDK registers before it starts serving).

        Raises:
            TimeoutError: not attached within ``timeout_secs`` seconds.
        """
        deadline = time.monotonic() + timeout_secs
        if not self.registry.wait_for(name, timeout_secs):
            raise TimeoutError(f"table {name} was not attached within {timeout_secs} s")
        owner = self.registry.external_tables().get(name)
        if owner is None:
            return
        path = extension_socket_path(self.socket_path, owner)
        while True:
            try:
                ping_extension(path, 2.0)
                return
            except ExtensionCallError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"table {name} is attached but its extension does not answer: {exc}"
                    ) from exc
            time.sleep(0.02)

    def wait_for_extension(self, name: str, timeout_secs: float) -> None:
        """Wait until an extension registers under that name (``--extensions_require``).

        Raises:
            TimeoutError: not registered within ``timeout_secs`` seconds.
        """
        if not self.registry.wait_for_extension(name, timeout_secs):
            raise TimeoutError(f"Required extension not found or not loaded: {name}")

    def extensions(self) -> dict[int, str]:
        """Registered extensions: uuid → name."""
        return {uuid: rec.name for uuid, rec in self.registry.extensions().items()}

    def check_extensions_now(self) -> list[int]:
        """Run one health-check round now; returns the uuids dropped."""
        return self._health.check_once()

    # SQL and packs -----------------------------------------------------------
    def query(self, sql: str) -> list[dict[str, str]]:
        """Run SQL; the same rows the ``query()`` Thrift method returns.

        Raises:
            StandinQueryError: with the message osqueryd would return.
        """
        return [
            {thrift_safe(k): thrift_safe(v) for k, v in row.items()}
            for row in self.engine.query_strings(sql)
        ]

    def query_columns(self, sql: str) -> list[tuple[str, str]]:
        """Result column names and types (``getQueryColumns``).

        Raises:
            StandinQueryError: with the SQLite error.
        """
        return self.engine.query_columns(sql)

    def add_pack(self, name: str, path_or_dict: str | os.PathLike[str] | Mapping[str, Any]) -> Pack:
        """Load a pack (file path or parsed JSON) and schedule it.

        Returns:
            The loaded pack.

        Raises:
            OSError: the file cannot be read.
            ValueError: not a JSON object.
        """
        pack = load_pack(
            name,
            path_or_dict,
            delimiter=self._pack_delimiter,
            splay_percent=self._splay_percent,
            default_interval=self._default_interval,
            refresh_interval_secs=self._pack_refresh,
            splays=self._splays,
        )
        self.scheduler.add_pack(pack)
        return pack

    def remove_pack(self, name: str) -> None:
        """Unschedule a pack."""
        self.scheduler.remove_pack(name)

    def run_scheduled_once(self, query_name: str | None = None) -> None:
        """Run scheduled queries now (packs whose discovery passes).

        Args:
            query_name: logged name ("pack_p_q") or query key ("q"); None runs
                every scheduled query.
        """
        self.scheduler.run_once(query_name)
