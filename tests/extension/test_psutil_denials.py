"""macOS and Windows: one process that denies access never empties the table.

Those systems cannot run here, so psutil's own errors are injected where they
arise: psutil.net_connections raising AccessDenied as it does on macOS
without root, and some processes denying Process.net_connections.
"""

from __future__ import annotations

import socket
from collections import namedtuple
from typing import Any

import psutil
import pytest

from extension.collect.psutil_source import PsutilCollector

_Addr = namedtuple("_Addr", "ip port")
_Conn = namedtuple("_Conn", "fd family type laddr raddr status")


class _Proc:
    def __init__(self, pid: int, conns: list[_Conn] | Exception) -> None:
        self.pid = pid
        self._conns = conns

    def net_connections(self, kind: str = "inet") -> list[_Conn]:
        if isinstance(self._conns, Exception):
            raise self._conns
        return self._conns


def _tcp(port: int, remote_port: int) -> _Conn:
    return _Conn(3, socket.AF_INET, socket.SOCK_STREAM, _Addr("10.0.0.5", port),
                 _Addr("203.0.113.9", remote_port), "ESTABLISHED")  # fmt: skip


def test_one_denied_process_leaves_the_others_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(kind: str = "inet") -> list[Any]:
        raise psutil.AccessDenied(pid=1)

    procs = [
        _Proc(100, [_tcp(51000, 443)]),
        _Proc(1, psutil.AccessDenied(pid=1)),
        _Proc(200, [_tcp(51001, 8443)]),
        _Proc(300, psutil.NoSuchProcess(pid=300)),
    ]
    monkeypatch.setattr(psutil, "net_connections", denied)
    monkeypatch.setattr(psutil, "process_iter", lambda *a, **k: iter(procs))
    collector = PsutilCollector()
    records = collector.collect()
    assert sorted((r.pid, r.local_port, r.remote_port) for r in records) == [
        (100, 51000, 443),
        (200, 51001, 8443),
    ]
    assert collector.access_denied_pids == 1


def test_the_host_wide_listing_is_used_when_it_works() -> None:
    collector = PsutilCollector()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        records = collector.collect()
    assert any(r.local_port == port and r.state == "LISTEN" for r in records)
    assert collector.access_denied_pids == 0
