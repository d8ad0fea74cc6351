"""Start-up checks of ``run`` and ``check-config --strict``: can this host run the config?

Beyond what ``check-config`` validates in the file itself:

* the state directory is writable (or, when missing, can be created: its nearest
  existing parent is writable);
* each source is readable, or — when it does not exist yet — its directory exists
  (for a glob, the directory part before the first wildcard);
* the metrics port is free (``check-config --strict`` only: ``run`` binds it right
  away and reports a taken port as ``ops_listen_failed``).

Each problem reads ``FILE: $.json.path: message`` like the config problems.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from alert_service.config import Config
from alert_service.ops.config import MetricsConfig
from alert_service.source import SourceConfig

__all__ = ["preflight_problems"]

_WILDCARDS = frozenset("*?[")


def _writable_dir(path: Path) -> str | None:
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user (uid {os.geteuid()})"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{path} cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and cannot be created: {parent} is not writable"
    # os.access says yes to root everywhere (/proc included): try it, and tidy up.
    try:
        probe = tempfile.mkdtemp(prefix=".tracked-connections-check.", dir=parent)
    except OSError as err:
        return f"{path} does not exist and cannot be created in {parent}: {err.strerror}"
    os.rmdir(probe)
    return None


def _readable_source(path: str) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except FileNotFoundError:
        directory = os.path.dirname(path) or "."
        if os.path.isdir(directory):
            return None
        return f"{path}: neither the file nor its directory {directory} exists"
    except OSError as err:
        return f"{path}: cannot be read: {err.strerror or err}"


def _glob_base(pattern: str) -> str:
    parts = Path(pattern).parts
    kept: list[str] = []
    for part in parts:
        if _WILDCARDS & set(part):
            break
        kept.append(part)
    # the last literal part may be a file-name prefix; its directory is what must exist
    base = Path(*kept) if kept else Path(".")
    return str(base if len(kept) < len(parts) else base.parent)


def _port_problem(address: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"{address}:{port} is in use by another process"
            return f"{address}:{port} cannot be bound: {err.strerror or err}"
    return None


def preflight_problems(config: Config, *, check_port: bool = True) -> list[str]:
    """Every problem that would stop ``config`` from running here, in config order.

    Args:
        config: a valid configuration.
        check_port: also try to bind the metrics address (``check-config --strict``).
    """
    problems: list[str] = []

    def add(where: str, message: str | None) -> None:
        if message is not None:
            problems.append(f"{config.file}: $.{where}: {message}")

    add("state_dir", _writable_dir(Path(config.state_dir)))
    for i, source in enumerate(config.sources):
        if not isinstance(source, SourceConfig):
            continue  # a stream: nothing on this host to check
        if not source.glob:
            add(f"sources[{i}].path", _readable_source(source.path))
        else:
            base = _glob_base(source.path)
            if not os.path.isdir(base):
                add(f"sources[{i}].glob", f"the directory {base} does not exist")
    # The console alone opens the ops port at its default address.
    listen = config.metrics or (MetricsConfig() if config.console is not None else None)
    if check_port and listen is not None and listen.port != 0:
        add("metrics.port", _port_problem(listen.listen_address, listen.port))
    return problems
