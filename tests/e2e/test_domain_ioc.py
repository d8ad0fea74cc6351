"""A domain IOC through the whole chain: DNS answer → extension → pack → alert → webhook.

A DNS server this test runs on 127.0.0.1 port 53 answers two names in the
documentation ranges; one process looks up a name under a listed domain, another a
name that is not listed, and each holds a UDP socket connected to its answer. The
extension (run by the osqueryd stand-in with the pack) gives their rows
``remote_hostname``; ``tracked-connections-alerts run`` matches a rule that takes an
address list *or* a domain list, and delivers to a real HTTP receiver on 127.0.0.1.
The second test does the same inside a network namespace the test creates (as in a
container), with glibc's getaddrinfo and a Unicode name listed in Unicode. Alerts are
told apart by the connecting process's pid and its socket's inode, never by port alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from osqueryd_standin import Standin
from tests.helpers.dns_server import dns_server, namespace_with_dns
from tests.helpers.osqueryd import PACK, ROOT, short_tmpdir, standin_with_extension
from tests.helpers.privileges import require
from tests.helpers.procs import wait_for
from tests.helpers.receiver import Receiver, webhook_receiver

_NAMES: dict[str, list[str] | str] = {
    "api.evil.tc-ioc.example": ["198.51.100.61"],
    "www.good.tc-ioc.example": ["198.51.100.62"],
}

_RESOLVE = r"""
import json, os, socket, sys
import dns.resolver
server, name = sys.argv[1:3]
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [server]
address = resolver.resolve(name, "A")[0].address
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((address, 9))  # a connected UDP socket: nothing is sent
print(json.dumps([os.getpid(), os.fstat(sock.fileno()).st_ino, address]), flush=True)
sys.stdin.read()
"""


@contextmanager
def _resolving(server: str, name: str) -> Iterator[tuple[int, int, str]]:
    """A process that looked ``name`` up at ``server`` and holds a UDP socket connected
    to the answer: yields (pid, socket inode, address)."""
    child = subprocess.Popen([sys.executable, "-c", _RESOLVE, server, name], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        pid, inode, address = json.loads(child.stdout.readline())
        yield pid, inode, address
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()


def _config(
    workdir: Path, results_log: Path, url: str, listed: str, named: list[str]
) -> Path:
    addresses = workdir / "c2-addresses.txt"
    addresses.write_text("# no address of this test is listed\n192.0.2.250\n", encoding="utf-8")
    domains = workdir / "c2-domains.txt"
    domains.write_text(
        f"# a feed with one bad line, which is skipped\n{listed}\nnot a domain\n",
        encoding="utf-8",
    )
    config = {
        "state_dir": str(workdir / "state"),
        "sources": [{"path": str(results_log), "start_at": "beginning"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": url, "timeout_secs": 5}],
        "rules": [
            {
                "name": "c2",
                "notify": ["hook"],
                "any_of": [
                    {"remote_address": {"include_files": [str(addresses)]}},
                    {
                        "remote_hostname": {
                            "domain_files": [str(domains)],
                            "source": ["process", "namespace"],
                        }
                    },
                ],
            },
            {  # every named row in the test's range: shows the unlisted row was matched
                "name": "named",
                "notify": ["hook"],
                "remote_address": {"include": named},
                "remote_hostname": {"glob": ["*"]},
            },
        ],
    }
    path = workdir / "alerts.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _alert(receiver: Receiver, rule: str, pid: int, inode: int) -> dict[str, Any] | None:
    for body in receiver.bodies():
        connection = body.get("connection", {}) if isinstance(body, dict) else {}
        if (
            body.get("rule") == rule
            and str(connection.get("pid")) == str(pid)
            and str(connection.get("socket")) == str(inode)
        ):
            return dict(body)
    return None


class _Service:
    stderr = ""


@contextmanager
def _alert_service(osqd: Standin, config: Path) -> Iterator[_Service]:
    """``tracked-connections-alerts run`` on the stand-in's results log with the pack
    added, once the pack's first (baseline) run is logged; its stderr is kept."""
    osqd.add_pack("tracked_connections", PACK)
    service = subprocess.Popen(
        [sys.executable, "-m", "alert_service", "run", "--config", str(config)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
    )
    kept = _Service()
    try:
        log = osqd.results_log_path
        wait_for(lambda: log.exists() and log.stat().st_size > 0, timeout_secs=60)
        yield kept
    finally:
        service.terminate()
        _, stderr = service.communicate(timeout=15)
        kept.stderr = stderr.decode(errors="replace")
    assert service.returncode == 0, kept.stderr


def _expected_source(osqd: Standin) -> str:
    """'process' where kernel events show who owns each DNS client socket."""
    (stats,) = osqd.query("SELECT source, dns, dns_off_reason FROM tracked_connections_stats")
    assert stats["dns"] in ("on", "degraded"), stats
    return "process" if stats["source"] == "events+sampling" else "namespace"


def test_a_lookup_of_a_listed_domain_alerts_through_the_whole_chain() -> None:
    require(os.geteuid() == 0, "reading DNS answers needs CAP_NET_RAW (root)")
    named_range = ["198.51.100.60/31", "198.51.100.62/32"]
    with (
        short_tmpdir() as workdir,
        webhook_receiver() as receiver,
        dns_server(_NAMES) as server,
        standin_with_extension(workdir, run_scheduler=True) as osqd,
    ):
        source = _expected_source(osqd)
        config = _config(workdir, osqd.results_log_path, receiver.url, "EVIL.tc-ioc.example.",
                         named_range)  # fmt: skip
        with (
            _alert_service(osqd, config) as service,
            _resolving(server, "API.Evil.tc-ioc.example") as (bad_pid, bad_inode, bad_addr),
            _resolving(server, "www.good.tc-ioc.example") as (ok_pid, ok_inode, ok_addr),
        ):
            wait_for(lambda: _alert(receiver, "c2", bad_pid, bad_inode) is not None,
                     timeout_secs=90)  # fmt: skip
            # The unlisted row was read and matched ("named"); alerts of one row go out
            # in rule order, so a "c2" alert for it would have come first.
            wait_for(lambda: _alert(receiver, "named", ok_pid, ok_inode) is not None,
                     timeout_secs=90)  # fmt: skip

    alert = _alert(receiver, "c2", bad_pid, bad_inode)
    assert alert is not None
    connection = alert["connection"]
    assert (bad_addr, ok_addr) == ("198.51.100.61", "198.51.100.62")
    assert connection["remote_address"] == bad_addr
    assert connection["remote_hostname"] == "api.evil.tc-ioc.example"  # lower-cased
    assert connection["remote_hostname_source"] == source
    assert _alert(receiver, "c2", ok_pid, ok_inode) is None
    named = _alert(receiver, "named", ok_pid, ok_inode)
    assert named is not None
    assert named["connection"]["remote_hostname"] == "www.good.tc-ioc.example"
    # The bad line of the list was reported, not fatal.
    assert "domain_list_bad_lines" in service.stderr


_CONNECT = r"""
import json, os, socket, sys
listener = socket.create_server(("0.0.0.0", 0))
port = listener.getsockname()[1]
out = []
held = []
for name in sys.argv[1:]:
    address = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    sock = socket.create_connection((address, port))
    held.append(sock)
    out.append([address, os.fstat(sock.fileno()).st_ino])
print(json.dumps([os.getpid(), out]), flush=True)
sys.stdin.read()
"""


def test_an_international_domain_in_a_container_namespace_alerts() -> None:
    # A process in a network namespace of its own (as in a container) looks a Unicode
    # name up with getaddrinfo (its ACE form goes on the wire) at a DNS server in that
    # namespace, and connects over TCP; the list names the domain in Unicode.
    names: dict[str, list[str] | str] = {
        "login.xn--bcher-shop-9db.example": ["192.0.2.71"],
        "www.other.example": ["192.0.2.72"],
    }
    with (
        namespace_with_dns(names) as netns,
        short_tmpdir() as workdir,
        webhook_receiver() as receiver,
        standin_with_extension(workdir, run_scheduler=True) as osqd,
    ):
        source = _expected_source(osqd)
        config = _config(workdir, osqd.results_log_path, receiver.url, "*.Bücher-Shop.example",
                         ["192.0.2.70/31", "192.0.2.72/32"])  # fmt: skip
        child = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _CONNECT,
             "Login.Bücher-Shop.example", "www.other.example"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        try:
            with _alert_service(osqd, config):
                pid, made = json.loads(child.stdout.readline())
                (bad_addr, bad_inode), (ok_addr, ok_inode) = made
                wait_for(lambda: _alert(receiver, "c2", pid, bad_inode) is not None,
                         timeout_secs=90)  # fmt: skip
                wait_for(lambda: _alert(receiver, "named", pid, ok_inode) is not None,
                         timeout_secs=90)  # fmt: skip
        finally:
            child.stdin.close()
            child.wait(timeout=20)
            child.stdout.close()

    assert (bad_addr, ok_addr) == ("192.0.2.71", "192.0.2.72")
    alert = _alert(receiver, "c2", pid, bad_inode)
    assert alert is not None
    connection = alert["connection"]
    assert connection["remote_hostname"] == "login.xn--bcher-shop-9db.example"
    assert connection["remote_hostname_source"] == source
    assert _alert(receiver, "c2", pid, ok_inode) is None
