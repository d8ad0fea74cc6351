"""The fast DNS answer parser gives exactly what dnspython's full parser gives.

Answers are generated with dnspython (random names, including odd octets and
mixed case; CNAME chains in any order; A, AAAA and other records; error
rcodes; compression as dnspython writes it), then mangled. The reference
applies the rule of ``extension.collect.dns_wire`` to
``dns.message.from_wire``'s result.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extension.collect.dns_wire import parse_answer

_A, _AAAA, _CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME
_IN = dns.rdataclass.IN


def reference(wire: bytes) -> object:
    """The rule, on dnspython's parse: 'rejected' when dnspython refuses the message."""
    try:
        message = dns.message.from_wire(wire)
    except Exception:
        return "rejected"
    flags = struct.unpack("!H", wire[2:4])[0]
    if flags & 0xF80F != 0x8000 or struct.unpack("!H", wire[4:6])[0] != 1:
        return None
    question = message.question[0]
    if question.rdclass != _IN or question.name == dns.name.root:
        return None
    cnames: dict[dns.name.Name, list[dns.name.Name]] = {}
    cname_ttl: dict[dns.name.Name, int] = {}
    for rrset in message.answer:
        if rrset.rdclass == _IN and rrset.rdtype == _CNAME:
            cnames.setdefault(rrset.name, []).extend(rd.target for rd in rrset)
            cname_ttl[rrset.name] = min(rrset.ttl, cname_ttl.get(rrset.name, rrset.ttl))
    chain, todo = {question.name}, [question.name]
    while todo:
        for target in cnames.get(todo.pop(), []):
            if target not in chain:
                chain.add(target)
                todo.append(target)
    on_chain = [cname_ttl[n] for n in chain if n in cnames]
    addresses: dict[str, int] = {}
    for rrset in message.answer:
        if rrset.rdclass != _IN or rrset.rdtype not in (_A, _AAAA) or rrset.name not in chain:
            continue
        ttl = min([rrset.ttl, *on_chain])
        for rd in rrset:
            address = ipaddress.ip_address(rd.address)
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            # As the table writes addresses: socket.inet_ntop (extension.collect.linux_proc).
            text = socket.inet_ntop(socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                                    address.packed)  # fmt: skip
            addresses[text] = min(ttl, addresses.get(text, ttl))
    name = question.name.to_text(omit_final_dot=True).lower()
    return name, sorted(addresses.items())


def ours(wire: bytes) -> object:
    answer = parse_answer(wire)
    return None if answer is None else (answer[0], sorted(answer[1]))


_LABEL_CHARS = st.sampled_from([*b"abcxyzABC019-_", 0, 32, 46, 92, 200, 255])
_labels = st.one_of(
    st.sampled_from([b"www", b"cdn", b"example", b"Example", b"xn--bcher-kva", b"a"]),
    st.lists(_LABEL_CHARS, min_size=1, max_size=8).map(bytes),
)
_names = st.lists(_labels, min_size=1, max_size=4).map(
    lambda labels: dns.name.Name([*labels, b""])
)
_ttls = st.integers(min_value=0, max_value=2**31 - 1)
_v4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_v6 = st.one_of(
    st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
    _v4.map(lambda a: f"::ffff:{a}"),
)


@st.composite
def answers(draw: st.DrawFn) -> bytes:
    pool = draw(st.lists(_names, min_size=1, max_size=5))
    qname = draw(st.sampled_from(pool))
    kind = draw(st.sampled_from([_A, _AAAA, dns.rdatatype.HTTPS]))
    query = dns.message.make_query(qname, kind, id=draw(st.integers(0, 65535)))
    response = dns.message.make_response(query)
    response.set_rcode(draw(st.sampled_from([dns.rcode.NOERROR] * 4 + [dns.rcode.NXDOMAIN])))
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        owner = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["A", "AAAA", "CNAME", "MX", "TXT"]))
        if kind == "A":
            rd = dns.rdata.from_text(_IN, _A, draw(_v4))
        elif kind == "AAAA":
            rd = dns.rdata.from_text(_IN, _AAAA, draw(_v6))
        elif kind == "CNAME":
            rd = dns.rdata.from_text(_IN, _CNAME, draw(st.sampled_from(pool)).to_text())
        elif kind == "MX":
            exchange = draw(st.sampled_from(pool)).to_text()
            rd = dns.rdata.from_text(_IN, dns.rdatatype.MX, f"10 {exchange}")
        else:
            rd = dns.rdata.from_text(_IN, dns.rdatatype.TXT, '"v=spf1"')
        rrset = response.find_rrset(response.answer, owner, _IN, rd.rdtype, create=True)
        rrset.add(rd, draw(_ttls))
    if draw(st.booleans()):
        response.use_edns(0, payload=1232)
    return bytes(response.to_wire(want_shuffle=False))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_generated_answers_parse_as_dnspython_parses_them(wire: bytes) -> None:
    expected = reference(wire)
    assert expected != "rejected"
    assert ours(wire) == expected


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers(), st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
       st.integers(min_value=0))  # fmt: skip
def test_mangled_answers_never_raise_and_agree_where_dnspython_accepts(
    wire: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    mangled = bytearray(wire)
    for where, value in flips:
        mangled[where % len(mangled)] = value
    mangled = mangled[: max(12, len(mangled) - cut % 8)] if cut % 3 == 0 else mangled
    data = bytes(mangled)
    got = ours(data)  # never raises
    expected = reference(data)
    if expected != "rejected":
        assert got == expected


def _message(rcode: int = 0, answers: list[dns.rrset.RRset] | None = None) -> bytes:
    response = dns.message.make_response(dns.message.make_query("api.Example.COM", "A"))
    response.set_rcode(rcode)
    response.answer.extend(answers or [])
    return bytes(response.to_wire(want_shuffle=False))


def test_a_cname_chain_gives_the_name_asked_with_the_least_ttl() -> None:
    wire = _message(answers=[
        dns.rrset.from_text("cdn.example.net.", 30, "IN", "A", "192.0.2.7", "192.0.2.8"),
        dns.rrset.from_text("api.example.com.", 300, "IN", "CNAME", "edge.example.org."),
        dns.rrset.from_text("edge.example.org.", 20, "IN", "CNAME", "cdn.example.net."),
        dns.rrset.from_text("other.example.", 300, "IN", "A", "198.51.100.1"),
        dns.rrset.from_text("cdn.example.net.", 300, "IN", "AAAA", "2001:db8::7"),
    ])  # fmt: skip
    assert ours(wire) == (
        "api.example.com",
        [("192.0.2.7", 20), ("192.0.2.8", 20), ("2001:db8::7", 20)],
    )


def test_errors_and_queries_are_not_answers() -> None:
    assert parse_answer(_message(rcode=dns.rcode.NXDOMAIN)) is None
    assert parse_answer(dns.message.make_query("a.example.", "A").to_wire()) is None
    assert parse_answer(b"") is None
    assert parse_answer(b"\x00" * 11) is None


def test_a_pointer_that_loops_is_refused() -> None:
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0)
    assert parse_answer(header + b"\xc0\x0c\x00\x01\x00\x01") is None  # points at itself
    assert reference(header + b"\xc0\x0c\x00\x01\x00\x01") == "rejected"


def test_odd_octets_in_names_are_escaped_as_dnspython_escapes_them() -> None:
    name = dns.name.Name([b"a.b", b"x y\x00\xff", b"Example", b""])
    response = dns.message.make_response(dns.message.make_query(name, "A"))
    response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "203.0.113.9"))
    got = parse_answer(bytes(response.to_wire()))
    assert got == ("a\\.b.x\\032y\\000\\255.example", [("203.0.113.9", 60)])
