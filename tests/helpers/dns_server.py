"""A small authoritative DNS server for tests, over UDP and TCP port 53, built on dnspython.

Run as ``python -m tests.helpers.dns_server --names JSON [--address A ...]``
(also inside a network namespace with ``ip netns exec``): it binds port 53
on the first address that is free, prints that address on one line, and
answers until its stdin closes. ``JSON`` maps a name to its addresses;
A and AAAA questions get the addresses of their family, with ``--ttl``;
a name listed as ``"alias.example": "cname:target.example"`` is a CNAME.
Every other question gets NXDOMAIN.

:func:`namespace_with_dns` makes a network namespace with such a server that glibc
there asks (for tests of names in containers).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.helpers.privileges import network_namespace, require

__all__ = ["answer", "dns_server", "namespace_with_dns"]

ROOT = Path(__file__).resolve().parents[2]


def answer(query_wire: bytes, names: dict[str, list[str] | str], ttl: int) -> bytes:
    """The response to one query."""
    query = dns.message.from_wire(query_wire)
    response = dns.message.make_response(query)
    question = query.question[0]
    name = question.name
    found = False
    for _ in range(8):
        entry = names.get(name.to_text(omit_final_dot=True).lower())
        if isinstance(entry, str) and entry.startswith("cname:"):
            target = dns.name.from_text(entry[6:])
            response.answer.append(dns.rrset.from_text(name, ttl, "IN", "CNAME", target.to_text()))
            name, found = target, True
            continue
        if entry is not None:
            found = True
            version = 4 if question.rdtype == dns.rdatatype.A else 6
            mine = [a for a in entry if ipaddress.ip_address(a).version == version]
            if mine and question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                kind = "A" if version == 4 else "AAAA"
                response.answer.append(dns.rrset.from_text(name, ttl, "IN", kind, *mine))
        break
    if not found:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return bytes(response.to_wire())


def _serve_udp(sock: socket.socket, names: dict[str, list[str] | str], ttl: int) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(4096)
        except OSError:
            return
        try:
            sock.sendto(answer(data, names, ttl), peer)
        except Exception as err:
            print(f"bad query: {err}", file=sys.stderr)


def _serve_tcp(sock: socket.socket, names: dict[str, list[str] | str], ttl: int) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            try:
                data = b""
                while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                reply = answer(data[2:], names, ttl)
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
            except Exception as err:
                print(f"bad query: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", required=True)
    parser.add_argument("--address", action="append", default=[])
    parser.add_argument("--ttl", type=int, default=300)
    args = parser.parse_args(argv)
    names = {k.lower(): v for k, v in json.loads(args.names).items()}
    for address in args.address or ["127.0.0.1"]:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((address, 53))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((address, 53))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            continue
        break
    else:
        print("no address free", flush=True)
        return 1
    threading.Thread(target=_serve_udp, args=(udp, names, args.ttl), daemon=True).start()
    threading.Thread(target=_serve_tcp, args=(tcp, names, args.ttl), daemon=True).start()
    print(address, flush=True)
    sys.stdin.read()
    return 0


@contextmanager
def dns_server(
    names: dict[str, list[str] | str], netns: str | None = None, ttl: int = 300
) -> Iterator[str]:
    """A server process (in network namespace ``netns`` if given); yields its address."""
    candidates = ["127.0.0.1"] + [f"127.0.53.{n}" for n in range(1, 20)]
    command = [sys.executable, "-m", "tests.helpers.dns_server", "--names", json.dumps(names),
               "--ttl", str(ttl)]  # fmt: skip
    for address in candidates:
        command += ["--address", address]
    if netns is not None:
        command = ["ip", "netns", "exec", netns, *command]
    child = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    try:
        address = child.stdout.readline().decode().strip()
        if address not in candidates:
            raise RuntimeError(f"the DNS server did not start: {address!r}")
        yield address
    finally:
        child.stdin.close()
        child.wait(timeout=10)
        child.stdout.close()


@contextmanager
def namespace_with_dns(names: dict[str, list[str] | str]) -> Iterator[str]:
    """A network namespace where 192.0.2.0/24 and 2001:db8::/32 are local, and a DNS server
    that glibc there asks (``ip netns exec`` puts /etc/netns/<name>/resolv.conf in place)."""
    require(os.geteuid() == 0, "network namespaces need root")
    with network_namespace() as netns:
        run = ["ip", "netns", "exec", netns, "ip"]
        subprocess.run([*run, "route", "add", "local", "192.0.2.0/24", "dev", "lo"], check=True)
        subprocess.run([*run, "-6", "route", "add", "local", "2001:db8::/32", "dev", "lo"],
                       check=True)  # fmt: skip
        conf = Path("/etc/netns") / netns
        conf.mkdir(parents=True)
        try:
            with dns_server(names, netns=netns) as server:
                (conf / "resolv.conf").write_text(f"nameserver {server}\n", encoding="utf-8")
                yield netns
        finally:
            shutil.rmtree(conf, ignore_errors=True)
            with suppress(OSError):
                Path("/etc/netns").rmdir()  # only if no other namespace has one


if __name__ == "__main__":
    raise SystemExit(main())
