"""The addresses a DNS answer gives for the name it was asked: a small, fast wire parser.

Shape of the result, for one DNS message (RFC 1035 §4.1):

* ``None`` when it is not a usable answer: not a response (QR clear), an
  opcode other than QUERY, an rcode other than NOERROR, not exactly one
  question, a question class other than IN, the root name asked, or a
  malformed message (a read past its end, a label type other than 0 or
  3 (RFC 1035 §4.1.4), a compression pointer that does not point strictly
  backwards or that chains more than 16 times, a name longer than 255
  octets, A or CNAME data of the wrong length);
* otherwise ``(name, [(address, ttl_secs), ...])``: ``name`` is the question
  name as text, ASCII lower-cased, in the presentation form of RFC 1035
  §5.1 (dots between labels, no final dot, other octets escaped as dnspython
  escapes them); the list holds every A (RFC 1035) and AAAA (RFC 3596)
  record of class IN in the answer section whose owner is the question name
  or a name the question name leads to through CNAME records of the answer
  section (in any order, RFC 1034 §3.6.2), each address once. ``address``
  is text as the table shows addresses (``socket.inet_ntop``, an IPv4-mapped
  AAAA as IPv4);
  ``ttl_secs`` is the smallest TTL of that address's RRset and of every CNAME
  RRset on the chain (RFC 2181 §5.2: the records of one RRset share a TTL;
  where they do not, the smallest counts; RFC 2181 §8: a TTL with its top
  bit set counts as zero). The list may be empty (NODATA).

This runs for every DNS answer the host receives, so it reads only the
header, the question and the answer section, and builds text only for the
question name. ``tests/extension/test_dns_wire.py`` proves it gives what
dnspython's full parser gives (``dns.message.from_wire``) on generated
answers and on mangled ones; names with octets outside letters, digits,
``-`` and ``_`` are turned into text by dnspython itself.
"""

from __future__ import annotations

import socket
from typing import Final

import dns.name

__all__ = ["Answer", "parse_answer"]

Answer = tuple[str, list[tuple[str, int]]]
"""(question name, [(address, TTL seconds)])."""

MAX_POINTER_HOPS: Final = 16
"""Compression pointers followed for one name (dnspython's MAX_COMPRESSION_POINTER_CHAIN)."""
_TYPE_A: Final = 1
_TYPE_CNAME: Final = 5
_TYPE_AAAA: Final = 28
_CLASS_IN: Final = 1
_PLAIN: Final = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_MAPPED: Final = b"\x00" * 10 + b"\xff\xff"
_inet_ntoa = socket.inet_ntoa
_inet_ntop = socket.inet_ntop
_AF_INET6 = socket.AF_INET6


class _BadMessageError(Exception):
    pass


def _name(msg: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """The name at ``pos``: (its labels as on the wire, lower-cased, uncompressed, next pos).

    Follows RFC 1035 §4.1.4 compression as dnspython does: each pointer must
    point before the previous one (before the name, for the first), and the
    labels after a jump must end before where the jump led from.
    """
    parts: list[bytes] = []
    start = biggest = pos
    after = -1
    hops = 0
    wire = 1
    while True:
        if pos >= end:
            raise _BadMessageError
        count = msg[pos]
        if count == 0:
            pos += 1
            break
        if count < 64:
            nxt = pos + 1 + count
            if nxt > end:
                raise _BadMessageError
            parts.append(msg[pos:nxt])
            wire += count + 1
            pos = nxt
        elif count >= 192:
            if pos + 1 >= end:
                raise _BadMessageError
            target = (count & 0x3F) << 8 | msg[pos + 1]
            if after < 0:
                after = pos + 2
            if target >= biggest:
                raise _BadMessageError
            biggest = target
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise _BadMessageError
            end = start
            pos = start = target
        else:
            raise _BadMessageError
    if wire > 255:
        raise _BadMessageError
    # Length octets are below 64, so lower() changes only the labels' letters.
    return b"".join(parts).lower(), after if after >= 0 else pos


def _text(key: bytes) -> str:
    """Presentation form of a name key from :func:`_name` (no final dot)."""
    labels = []
    i, end = 0, len(key)
    while i < end:
        nxt = i + 1 + key[i]
        labels.append(key[i + 1 : nxt])
        i = nxt
    if not b"".join(labels).translate(None, _PLAIN):
        return b".".join(labels).decode("ascii")
    return dns.name.Name([*labels, b""]).to_text(omit_final_dot=True)


def parse_answer(msg: bytes) -> Answer | None:
    """The question name and the addresses the answer gives for it; see the module docs.

    Args:
        msg: one DNS message, without TCP's length prefix.

    Returns:
        ``(name, [(address, ttl_secs)])``, or None for a message that is not
        a usable answer. Never raises on any input.
    """
    try:
        return _parse(msg)
    except (_BadMessageError, IndexError, ValueError):
        return None


def _parse(msg: bytes) -> Answer | None:
    end = len(msg)
    if end < 12:
        return None
    flags = msg[2] << 8 | msg[3]
    # QR set, opcode QUERY (0), rcode NOERROR (0).
    if flags & 0xF80F != 0x8000:
        return None
    if msg[4] << 8 | msg[5] != 1:
        return None
    ancount = msg[6] << 8 | msg[7]
    qkey, pos = _name(msg, 12, end)
    if pos + 4 > end or msg[pos + 2] << 8 | msg[pos + 3] != _CLASS_IN or not qkey:
        return None
    pos += 4
    cnames: dict[bytes, list[bytes]] = {}
    cname_ttl: dict[bytes, int] = {}
    found: dict[bytes, list[tuple[bytes, int, int]]] = {}
    rrset_ttl: dict[tuple[bytes, int], int] = {}
    for _ in range(ancount):
        owner, pos = _name(msg, pos, end)
        head = pos + 10
        if head > end:
            raise _BadMessageError
        rtype = msg[pos] << 8 | msg[pos + 1]
        rclass = msg[pos + 2] << 8 | msg[pos + 3]
        ttl = msg[pos + 4] << 24 | msg[pos + 5] << 16 | msg[pos + 6] << 8 | msg[pos + 7]
        if ttl & 0x80000000:
            ttl = 0  # RFC 2181 §8: a TTL with its top bit set counts as zero
        rdlen = msg[pos + 8] << 8 | msg[pos + 9]
        pos = head + rdlen
        if pos > end:
            raise _BadMessageError
        if rclass != _CLASS_IN:
            continue
        if rtype in (_TYPE_A, _TYPE_AAAA):
            if rdlen != (4 if rtype == _TYPE_A else 16):
                raise _BadMessageError
            found.setdefault(owner, []).append((msg[head:pos], rtype, ttl))
        elif rtype == _TYPE_CNAME:
            target, after = _name(msg, head, pos)
            if after != pos:
                raise _BadMessageError
            cnames.setdefault(owner, []).append(target)
            cname_ttl[owner] = min(ttl, cname_ttl.get(owner, ttl))
        else:
            continue
        key = (owner, rtype)
        rrset_ttl[key] = min(ttl, rrset_ttl.get(key, ttl))
    # Every name the question leads to through CNAMEs, and the least CNAME TTL on the way.
    chain = {qkey}
    todo = [qkey]
    chain_ttl = -1
    while todo:
        name = todo.pop()
        for target in cnames.get(name, ()):
            ttl = cname_ttl[name]
            chain_ttl = ttl if chain_ttl < 0 else min(chain_ttl, ttl)
            if target not in chain:
                chain.add(target)
                todo.append(target)
    addresses: dict[str, int] = {}
    for name in chain:
        for data, rtype, _ttl in found.get(name, ()):
            ttl = rrset_ttl[(name, rtype)]
            if chain_ttl >= 0:
                ttl = min(ttl, chain_ttl)
            if rtype == _TYPE_A:
                text = _inet_ntoa(data)
            elif data[:12] == _MAPPED:
                text = _inet_ntoa(data[12:])
            else:
                text = _inet_ntop(_AF_INET6, data)
            old = addresses.get(text)
            addresses[text] = ttl if old is None else min(old, ttl)
    return _text(qkey), list(addresses.items())
