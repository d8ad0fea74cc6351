"""Extension health checks, as osqueryd's ExtensionManagerWatcher makes them.

Part of the osqueryd stand-in (a test double, not osquery).
(Upstream osquery 5.23
osquery/extensions/extensions.cpp ExtensionManagerWatcher::watch,
extensionPathActive, applyExtensionDelay.)

Every ``extensions_interval`` seconds (minimum 0.2 s), for each registered
uuid: on the first check only, a missing ``<socket>.<uuid>`` file is polled
every 20 ms for up to ``extensions_timeout`` seconds (minimum 0.2 s); then
``ping()`` is sent on a fresh connection. A failed connection, a missing
socket, or a ping with code 1 drops the extension at once ("Extension UUID N
has gone away") and detaches its tables; code 0 and code 2 count as success.
There is no retry.

On stop, :meth:`HealthChecker.shutdown_all` calls ``shutdown()`` on every
registered extension, as the watcher does when osqueryd stops.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time

from osqueryd_standin.client import (
    ExtensionCallError,
    extension_socket_path,
    ping_extension,
    shutdown_extension,
)
from osqueryd_standin.registry import Registry

__all__ = ["HealthChecker"]

log = logging.getLogger("osqueryd_standin.health")

_POLL_SECS = 0.02
_MIN_SECS = 0.2


def _socket_exists(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class HealthChecker:
    """Background thread pinging registered extensions.

    Args:
        registry: registrations to check and to drop from.
        manager_socket: the ``--extensions_socket`` path.
        interval_secs: ``--extensions_interval``, seconds.
        timeout_secs: ``--extensions_timeout``, seconds.
        call_timeout_secs: ``--thrift_timeout`` for the ping, seconds.
    """

    def __init__(
        self,
        registry: Registry,
        manager_socket: str,
        interval_secs: float,
        timeout_secs: float,
        call_timeout_secs: float = 300.0,
    ) -> None:
        self._registry = registry
        self._socket = manager_socket
        self._interval = max(_MIN_SECS, interval_secs)
        self._timeout = max(_MIN_SECS, timeout_secs)
        self._call_timeout = call_timeout_secs
        self._checked: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the checking thread (checks at once, then every interval)."""
        self._thread = threading.Thread(target=self._run, name="standin-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waits for a check in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + self._call_timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self._stop.wait(self._interval)

    def _wait_for_socket(self, path: str) -> bool:
        deadline = time.monotonic() + self._timeout
        while not self._stop.is_set():
            if _socket_exists(path):
                try:
                    ping_extension(path, min(self._call_timeout, 10.0))
                    return True
                except ExtensionCallError:
                    pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_SECS)
        return _socket_exists(path)

    def check_once(self) -> list[int]:
        """Run one round of checks.

        Returns:
            The uuids dropped in this round.
        """
        dropped: list[int] = []
        live = self._registry.uuids()
        self._checked &= set(live)
        for uuid in live:
            path = extension_socket_path(self._socket, uuid)
            exists = _socket_exists(path)
            if not exists and uuid not in self._checked:
                exists = self._wait_for_socket(path)
            self._checked.add(uuid)
            healthy = False
            if exists:
                try:
                    healthy = ping_extension(path, self._call_timeout) != 1
                except ExtensionCallError:
                    healthy = False
            if not healthy:
                dropped.append(uuid)
        for uuid in dropped:
            log.info("Extension UUID %d has gone away", uuid)
            self._registry.deregister(uuid)
            self._checked.discard(uuid)
        return dropped

    def shutdown_all(self, timeout_secs: float = 5.0) -> list[int]:
        """Call ``shutdown()`` on every registered extension.

        Args:
            timeout_secs: per-call timeout, seconds.

        Returns:
            The uuids whose shutdown call succeeded.
        """
        done: list[int] = []
        for uuid in self._registry.uuids():
            path = extension_socket_path(self._socket, uuid)
            try:
                shutdown_extension(path, timeout_secs)
                done.append(uuid)
            except ExtensionCallError as exc:
                log.info("Extension UUID %d shutdown request failed: %s", uuid, exc)
        return done
