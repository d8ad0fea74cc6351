"""Launching and stopping extension processes like osqueryd's watcher.

Part of the osqueryd stand-in (a test double, not osquery).

Launch (upstream osquery 5.23
osquery/process/posix/process.cpp launchExtension): the child runs
``<cmd> [--verbose] --socket <extensions_socket> --timeout <extensions_timeout>
--interval <extensions_interval>`` with the inherited environment plus
``OSQUERY_EXTENSION=<its own pid>``. The pid is set exactly by starting the
command through ``/bin/sh -c 'OSQUERY_EXTENSION=$$ exec "$0" "$@"'``: ``exec``
keeps the shell's pid. ``<cmd>`` may be a path (as osqueryd takes) or a
command list such as ``[sys.executable, "-m", "extension"]``.

Stop (docs/design/osquery-interfaces.md §2; osquery 5.23 osquery/core/watcher.cpp
stopChild): SIGTERM, then SIGKILL after a grace period (osqueryd: ``--alarm_timeout`` - 4 = 11 s).

Not emulated: the autoload permission checks, ``.ext`` suffix check, respawn
of dead extensions, and the extensions watchdog. Children are put in their own
process group so a terminal Ctrl-C reaches only the stand-in, which then stops
them in order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

__all__ = ["build_argv", "flag_seconds", "launch", "stop_children"]

log = logging.getLogger("osqueryd_standin.launcher")

_SHELL_WRAPPER = 'OSQUERY_EXTENSION=$$; export OSQUERY_EXTENSION; exec "$0" "$@"'


def flag_seconds(value: float) -> str:
    """Render a seconds value as an osqueryd flag string.

    osqueryd passes its flag strings ("3"); the Python SDK parses them with
    ``int()``, so fractions are rounded up to whole seconds (minimum 1).
    """
    if float(value).is_integer() and value >= 1:
        return str(int(value))
    return str(max(1, math.ceil(value)))


def build_argv(
    cmd: Sequence[str] | str,
    socket_path: str,
    timeout_secs: float,
    interval_secs: float,
    verbose: bool,
) -> list[str]:
    """The argv osqueryd gives an extension.

    Args:
        cmd: executable path, or a command list whose first item is the program.
        socket_path: ``--extensions_socket``.
        timeout_secs: ``--extensions_timeout``, seconds.
        interval_secs: ``--extensions_interval``, seconds.
        verbose: add ``--verbose`` (only when osqueryd itself is verbose).

    Returns:
        ``[*cmd, (--verbose), --socket, S, --timeout, T, --interval, I]``.
    """
    argv = [cmd] if isinstance(cmd, str) else list(cmd)
    if not argv:
        raise ValueError("empty extension command")
    if verbose:
        argv.append("--verbose")
    argv += [
        "--socket",
        socket_path,
        "--timeout",
        flag_seconds(timeout_secs),
        "--interval",
        flag_seconds(interval_secs),
    ]
    return argv


def launch(
    argv: Sequence[str],
    extra_env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start an extension process.

    Args:
        argv: from :func:`build_argv`.
        extra_env: variables added to the inherited environment.
        stdout: passed to Popen (default: inherited).
        stderr: passed to Popen (default: inherited).

    Returns:
        The Popen; its pid equals ``OSQUERY_EXTENSION`` in the child.

    Raises:
        OSError: /bin/sh cannot be started. A missing extension program makes
            the child exit 127 instead, as a failed exec would.
    """
    env = dict(os.environ)
    env.pop("OSQUERY_EXTENSION", None)
    if extra_env:
        env.update(extra_env)
    full = ["/bin/sh", "-c", _SHELL_WRAPPER, *argv]
    log.info("Created and monitoring extension child: %s", " ".join(argv))
    return subprocess.Popen(
        full,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        close_fds=True,
        restore_signals=True,
        process_group=0,
    )


def stop_children(children: Sequence[subprocess.Popen[bytes]], kill_grace_secs: float) -> None:
    """SIGTERM every live child, then SIGKILL those alive after the grace.

    Args:
        children: launched processes.
        kill_grace_secs: seconds between SIGTERM and SIGKILL.
    """
    live = [c for c in children if c.poll() is None]
    for child in live:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + kill_grace_secs
    for child in live:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            log.warning("Extension pid %d did not stop; sending SIGKILL", child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()
