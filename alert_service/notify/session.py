"""HTTP sessions that send exactly what the config says, within a total deadline.

:func:`exact_session` builds the :class:`requests.Session` of every HTTP notifier and
Fleet action:

* ``trust_env`` is off: requests would otherwise take credentials from ``~/.netrc``
  (replacing a configured ``Authorization`` header with Basic credentials of another
  site), proxies from ``HTTP(S)_PROXY``/``ALL_PROXY`` and a CA bundle from
  ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` (requests ``sessions.py``,
  ``Session.merge_environment_settings`` and ``adapters.py`` ``prepare_auth`` in
  requests 2.32). Only the notifier's ``proxy_url`` and ``ca_file`` options set them.
* Every request has a **total** deadline (:func:`deadline`): requests' and urllib3's
  timeouts bound each socket operation, so an endpoint that sends one byte every few
  seconds would keep an attempt going forever. A watchdog shuts the request's socket
  down when the deadline passes (``shutdown(2)`` wakes a ``recv`` blocked in another
  thread), in any phase: TLS handshake, headers or body. The connection classes that
  make this possible are urllib3's own, subclassed only to tell the watchdog which
  socket the current request uses.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any, Final

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager

__all__ = ["Deadline", "deadline", "exact_session"]

_RECHECK_SECS: Final = 0.25
_local = threading.local()


class Deadline:
    """The watchdog of one request: after ``secs`` it shuts the request's socket down,
    and keeps doing so for any new socket until :meth:`done`.

    Attributes:
        fired: the deadline passed while the request ran.
    """

    def __init__(self, secs: float) -> None:
        self.secs = secs
        self.fired = False
        self._conn: HTTPConnection | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="http-deadline", daemon=True)

    def start(self) -> None:
        """Start the watchdog thread."""
        self._thread.start()

    def attach(self, conn: HTTPConnection) -> None:
        """Record the connection the current request uses."""
        with self._lock:
            self._conn = conn
        if self.fired:
            self._shutdown()

    def done(self) -> None:
        """The request returned: stop watching."""
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        if self._done.wait(self.secs):
            return
        self.fired = True
        while True:
            self._shutdown()
            if self._done.wait(_RECHECK_SECS):
                return

    def _shutdown(self) -> None:
        with self._lock:
            conn = self._conn
        sock = getattr(conn, "sock", None)
        if isinstance(sock, socket.socket):
            # The base class's shutdown: SSLSocket.shutdown would also drop its TLS
            # state under the thread blocked in recv.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextlib.contextmanager
def deadline(secs: float) -> Iterator[Deadline]:
    """Run the requests made in the ``with`` block (this thread, an
    :func:`exact_session`) under one total deadline of ``secs`` seconds.

    After the block, ``fired`` tells whether the deadline cut the request short (its
    error is then a timeout, whatever requests called it).
    """
    watch = Deadline(secs)
    previous = getattr(_local, "deadline", None)
    _local.deadline = watch
    watch.start()
    try:
        yield watch
    finally:
        _local.deadline = previous
        watch.done()


def _attach(conn: HTTPConnection) -> None:
    watch: Deadline | None = getattr(_local, "deadline", None)
    if watch is not None:
        watch.attach(conn)


class _WatchedHTTPConnection(HTTPConnection):
    def connect(self) -> None:
        _attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        _attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _attach(self)
        super().request(*args, **kwargs)


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS: Final = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose pools (direct and through a proxy) use the watched connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> ProxyManager:
        manager: ProxyManager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def exact_session(proxy_url: str | None = None, ca_file: str | None = None) -> requests.Session:
    """Return a session that uses nothing from the environment.

    Args:
        proxy_url: proxy for every request (``http://host:port``), or None for none.
        ca_file: CA bundle (PEM) to verify TLS with, or None for the default bundle
            (certifi's, as requests ships it).
    """
    session = requests.Session()
    session.trust_env = False
    adapter = _WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if proxy_url:
        session.proxies = {"http": proxy_url, "https": proxy_url}
    if ca_file:
        session.verify = ca_file
    return session
