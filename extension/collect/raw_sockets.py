"""Raw IP, ICMP and packet sockets: what backdoors that need no port listen on.

A raw IP socket (``SOCK_RAW``) receives every packet of its IP protocol, an
ICMP "ping" socket (``SOCK_DGRAM``, ``IPPROTO_ICMP``) every echo reply for
its identifier, and a packet socket (``AF_PACKET``) every frame of its
Ethernet protocol, before any firewall: that is how implants such as
BPFDoor wait for their magic packet without a listening port. Each one is a
row: family and protocol say what it sees, the owner who holds it.

Sources: Linux proc(5). ``/proc/net/raw`` and ``raw6`` (net/ipv4/raw.c
``raw_sock_seq_show``, net/ipv6/raw.c) and ``/proc/net/icmp``, ``icmp6``
(net/ipv4/ping.c ``ping_v4_format_sock``) print the same columns as
``/proc/net/udp``: for a raw socket the "port" of the local address is its
IP protocol number, for a ping socket its ICMP identifier. ``/proc/net/packet``
(net/packet/af_packet.c ``packet_seq_show``) prints ``sk RefCnt Type Proto
Iface R Rmem User Inode``: the socket type (2 ``SOCK_DGRAM``, 3
``SOCK_RAW``), the Ethernet protocol in hex (``0003`` is ``ETH_P_ALL``,
every frame; include/uapi/linux/if_ether.h), the interface index it is
bound to (0: every interface) and the inode.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AF_PACKET",
    "IPPROTO_ICMP",
    "IPPROTO_ICMPV6",
    "PacketSocket",
    "RawSocket",
    "interface_names",
    "parse_packet",
    "parse_raw",
]

AF_PACKET: Final = 17
IPPROTO_ICMP: Final = 1
IPPROTO_ICMPV6: Final = 58


@dataclass(frozen=True, slots=True)
class RawSocket:
    """A raw IP or ICMP socket from /proc/net/{raw,raw6,icmp,icmp6}.

    Attributes:
        local: local address as the kernel prints it (hex).
        number: the protocol number (raw) or ICMP identifier (ping).
        remote: remote address (hex); zero when not connected.
        remote_number: the remote "port" the kernel prints (0 when none).
        inode: socket inode.
    """

    local: bytes
    number: int
    remote: bytes
    remote_number: int
    inode: int


@dataclass(frozen=True, slots=True)
class PacketSocket:
    """A packet socket from /proc/net/packet.

    Attributes:
        ethertype: the Ethernet protocol it receives (3: every frame).
        ifindex: interface index it is bound to; 0 for every interface.
        inode: socket inode.
    """

    ethertype: int
    ifindex: int
    inode: int


def parse_raw(data: bytes) -> list[RawSocket]:
    """Parse /proc/net/{raw,raw6,icmp,icmp6}; lines that do not parse are skipped."""
    out = []
    for line in data.split(b"\n")[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            local, _, number = fields[1].partition(b":")
            remote, _, remote_number = fields[2].partition(b":")
            out.append(
                RawSocket(local, int(number, 16), remote, int(remote_number, 16), int(fields[9]))
            )
        except ValueError:
            continue
    return out


def parse_packet(data: bytes) -> list[PacketSocket]:
    """Parse /proc/net/packet; lines that do not parse are skipped."""
    out = []
    for line in data.split(b"\n")[1:]:
        fields = line.split()
        if len(fields) < 9:
            continue
        try:
            out.append(PacketSocket(int(fields[3], 16), int(fields[4]), int(fields[8])))
        except ValueError:
            continue
    return out


def interface_names(igmp: bytes | None, own: bool) -> Callable[[int], str]:
    """Interface index -> name, for a namespace.

    Args:
        igmp: the namespace's /proc/<pid>/net/igmp (``Idx Device : ...``
            lines list every interface with IPv4 up), or None.
        own: the namespace is ours, where ``if_indextoname(3)`` works.

    Returns:
        a function giving the name, or ``ifindex <n>`` when it is not known.
    """
    names: dict[int, str] = {}
    if igmp:
        for line in igmp.split(b"\n")[1:]:
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit() and not line.startswith((b"\t", b" ")):
                names[int(fields[0])] = fields[1].decode("utf-8", "replace").rstrip(":")

    def name(index: int) -> str:
        if index in names:
            return names[index]
        if own:
            try:
                return socket.if_indextoname(index)
            except OSError:
                pass
        return f"ifindex {index}"

    return name
