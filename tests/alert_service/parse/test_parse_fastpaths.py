"""Hot-path shortcuts of parse and match give exactly what the plain ways give.

Each shortcut (issue #5, benchmarks/alert_bench.py) is checked against the slower
reference it replaces: ``address_number`` against :func:`parse_address` (the
:mod:`ipaddress` module), the cached column typing against a straightforward
per-value typing written out here, ``Event``'s own constructor against the dataclass
contract, the number-keyed address sets against ``in`` on :mod:`ipaddress` objects.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import ipaddress
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import pytest
from deliver_support import make_event as shared_event
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.errors import MatchError, ParseError
from alert_service.match import (
    AddressSet,
    AddressSpec,
    EventView,
    IocList,
    NumberSet,
    PortSet,
    RuleSet,
    RuleSpec,
    parse_address,
)
from alert_service.match import addresses as addresses_module
from alert_service.match.addresses import (
    ADDRESS_CACHE_ENTRIES,
    IPV6_OFFSET,
    address_number,
    cached_address_number,
    network_span,
    parse_network,
)
from alert_service.parse import ColumnValue, Event, normalise_columns, parse_line
from alert_service.parse import values as values_module
from alert_service.parse.event import new_event
from alert_service.parse.line import _event_form, _load, _parse_doc
from alert_service.parse.values import (
    INT_CACHE_ENTRIES,
    MAX_INT_DIGITS,
    NUMERIC_COLUMNS,
    REPEATING_COLUMNS,
)

# -- address numbers ---------------------------------------------------------------


def reference_number(text: object) -> int | None:
    """The address number by way of the ipaddress module."""
    addr = parse_address(text)
    if addr is None:
        return None
    return int(addr) + (0 if addr.version == 4 else IPV6_OFFSET)


EDGE_ADDRESSES = [
    "93.184.216.34",
    "10.0.0.1",
    "255.255.255.255",
    "0.0.0.1",
    "0.0.0.0",
    "::",
    "::1",
    "::0.0.0.1",
    "::1.2.3.4",
    "::ffff:10.0.0.1",
    "::ffff:0.0.0.0",
    "::ffff:a00:1",
    "::FFFF:10.0.0.1",
    "::ffff:1:2",
    "0:0:0:0:0:ffff:a00:1",
    "2001:db8::1",
    "2001:DB8::1",
    "2001:0db8:0000:0000:0000:0000:0000:0001",
    "2001:db8:0:0:1:0:0:1",
    "fe80::1%eth0",
    "fe80::1%",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:2:3:4:5:6::7:8",
    "1::2::3",
    "010.0.0.1",
    "10.0.0.01",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    " 10.0.0.1",
    "10.0.0.1 ",
    "10.0.0.1\x00",
    "\u0661.\u0662.\u0663.\u0664",  # Arabic-Indic digits
    "10.0.0.0/8",
    "not-an-ip",
    "",
    None,
    167772161,
    b"10.0.0.1",
]


@pytest.mark.parametrize("text", EDGE_ADDRESSES)
def test_address_number_agrees_with_ipaddress(text: object) -> None:
    assert address_number(text) == reference_number(text)


def test_address_number_values() -> None:
    assert address_number("10.0.0.1") == 0x0A000001
    assert address_number("::ffff:10.0.0.1") == 0x0A000001  # unwrapped to IPv4
    assert address_number("::1") == IPV6_OFFSET + 1
    assert address_number("fe80::1%eth0") == IPV6_OFFSET + (0xFE80 << 112) + 1
    assert address_number("0.0.0.0") is None
    assert address_number("::") is None


def address_texts(value: int, v6: bool) -> list[str]:
    """Several ways to write one address, canonical and not."""
    if not v6:
        v4 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
        return [str(v4), f"::ffff:{v4}", f"::{v4}", f"::FFFF:{v4}"]
    addr = ipaddress.IPv6Address(value)
    return [str(addr), addr.exploded, str(addr).upper(), f"{addr}%eth0"]


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 2**128 - 1), v6=st.booleans(), small=st.booleans())
def test_address_number_agrees_on_random_addresses(value: int, v6: bool, small: bool) -> None:
    if small:  # short runs of zeros and mapped/compatible prefixes
        value &= 0xFFFF_FFFF_FFFF
    for text in address_texts(value, v6):
        assert address_number(text) == reference_number(text), text


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789abcdefABCDEF:.%/ x\x00", max_size=45))
def test_address_number_agrees_on_random_text(text: str) -> None:
    assert address_number(text) == reference_number(text)


@settings(max_examples=1000, deadline=None)
@given(
    octets=st.lists(
        st.one_of(st.integers(0, 300).map(str), st.sampled_from(["", "00", "01", "007", "+1"])),
        min_size=1,
        max_size=6,
    ),
    noise=st.sampled_from(["", " ", "\x00", "\n", "\u0661", "/8"]),
)
def test_address_number_agrees_on_dotted_text(octets: list[str], noise: str) -> None:
    """IPv4 text is read by inet_pton alone: the dotted forms it and ipaddress might
    read differently (leading zeros, octets over 255, too few or many parts)."""
    text = ".".join(octets)
    for candidate in (text, text + noise, noise + text):
        assert address_number(candidate) == reference_number(candidate)


@settings(max_examples=300, deadline=None)
@given(
    texts=st.lists(
        st.one_of(
            st.text(alphabet="0123456789abcdefABCDEF:.%/ x\x00", max_size=45),
            st.sampled_from(EDGE_ADDRESSES),
        ),
        max_size=6,
    )
)
def test_cached_address_number_equals_address_number(texts: list[object]) -> None:
    for text in texts * 2:  # the second time from the cache
        assert cached_address_number(text) == reference_number(text)


def test_address_cache_is_bounded() -> None:
    for value in range(1, ADDRESS_CACHE_ENTRIES + 10):
        text = str(ipaddress.IPv4Address(value))
        assert cached_address_number(text) == value
    assert len(addresses_module._NUMBER_CACHE) <= ADDRESS_CACHE_ENTRIES


def reference_span(text: str) -> tuple[int, int, int] | str:
    """The span of a network by way of :func:`parse_network`, or its error message."""
    try:
        net = parse_network(text)
    except MatchError as err:
        return str(err)
    return net.version, int(net.network_address), int(net.broadcast_address)


def fast_span(text: str) -> tuple[int, int, int] | str:
    try:
        return network_span(text)
    except MatchError as err:
        return str(err)


def network_texts(value: int, v6: bool, prefix: int) -> list[str]:
    """Network and address texts around one value: canonical, host bits set, odd forms."""
    bits = 128 if v6 else 32
    prefix %= bits + 1
    value &= (1 << bits) - 1
    first = value & ~((1 << (bits - prefix)) - 1)
    addr = str(ipaddress.ip_address(first if v6 else first & 0xFFFFFFFF))
    return [
        f"{addr}/{prefix}",
        f"{ipaddress.ip_address(value)}/{prefix}",  # host bits set, mostly
        addr,
        f"{addr}/0{prefix}",
        f"{addr}/",
        f"{addr}/{prefix + bits}",
        f"{addr.upper()}/{prefix}",
        f"::ffff:{ipaddress.IPv4Address(value & 0xFFFFFFFF)}/{96 + prefix % 33}",
        f"::ffff:{ipaddress.IPv4Address(first & 0xFFFFFFFF)}",
        f"{addr}%eth0/{prefix}",
        f"{addr}/255.255.0.0",
    ]


@settings(max_examples=300, deadline=None)
@given(value=st.integers(0, 2**128 - 1), v6=st.booleans(), prefix=st.integers(0, 200))
def test_network_span_agrees_with_parse_network(value: int, v6: bool, prefix: int) -> None:
    for text in network_texts(value, v6, prefix):
        assert fast_span(text) == reference_span(text), text


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789abcdefABCDEF:./ %x\x00", max_size=45))
def test_network_span_agrees_on_random_text(text: str) -> None:
    assert fast_span(text) == reference_span(text)


NETWORKS = [
    "10.0.0.0/8",
    "192.0.2.7",
    "198.51.100.0/24",
    "::ffff:203.0.113.0/120",
    "2001:db8::/32",
    "fe80::/10",
    "::/127",
    "255.255.255.255/32",
]


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 2**128 - 1), v6=st.booleans())
def test_address_set_number_test_agrees_with_in(value: int, v6: bool) -> None:
    cidrs = AddressSet(NETWORKS)
    for text in [*address_texts(value, v6), "10.1.2.3", "::ffff:203.0.113.9", "2001:db8::5"]:
        addr = parse_address(text)
        number = address_number(text)
        if addr is None:
            assert number is None
            continue
        assert number is not None
        assert cidrs.contains_number(number) is (addr in cidrs), text


def test_ioc_list_number_test_agrees_with_in(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("198.51.100.7\n203.0.113.0/24\n2001:db8:bad::/48\n::ffff:192.0.2.0/120\n")
    iocs = IocList(str(path))
    for text in [
        "198.51.100.7",
        "198.51.100.8",
        "203.0.113.200",
        "::ffff:203.0.113.1",
        "2001:db8:bad::1",
        "2001:db8:bad:1::1",
        "192.0.2.9",
        "::ffff:192.0.2.9",
        "::c000:209",  # IPv4-compatible, not mapped: an IPv6 address
    ]:
        addr = parse_address(text)
        number = address_number(text)
        assert addr is not None and number is not None
        assert iocs.contains_number(number) is (addr in iocs), text


def test_event_view_keeps_both_address_forms() -> None:
    view = EventView(make_event({"remote_address": "::ffff:198.51.100.7"}))
    assert view.remote_address == ipaddress.IPv4Address("198.51.100.7")
    assert view.remote_address is view.remote_address  # parsed once
    assert view.remote_number == int(ipaddress.IPv4Address("198.51.100.7"))
    assert EventView(make_event({"remote_address": ""})).remote_number is None
    assert EventView(make_event({})).remote_address is None


def test_rules_with_ioc_file_and_inline_cidrs(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_text("203.0.113.0/24\n2001:db8:bad::/48\n")
    spec = RuleSpec(
        name="r",
        notify=("n",),
        remote_address=AddressSpec(("198.51.100.0/24",), ("198.51.100.9",), (str(path),)),
    )
    rules = RuleSet([spec])
    hits = {
        text: bool(rules.match(make_event({"remote_address": text})))
        for text in [
            "198.51.100.1",
            "198.51.100.9",
            "203.0.113.5",
            "::ffff:203.0.113.5",
            "2001:db8:bad::7",
            "2001:db8:bad::7%eth0",
            "192.0.2.1",
            "0.0.0.0",
        ]
    }
    assert hits == {
        "198.51.100.1": True,
        "198.51.100.9": False,
        "203.0.113.5": True,
        "::ffff:203.0.113.5": True,
        "2001:db8:bad::7": True,
        "2001:db8:bad::7%eth0": True,
        "192.0.2.1": False,
        "0.0.0.0": False,
    }


# -- numbers -------------------------------------------------------------------------


class Port(enum.IntEnum):
    HTTPS = 443


def test_number_sets_take_ints_only() -> None:
    singles = PortSet([443, 8443])
    ranged = PortSet(["6660-6669", 22])
    assert 443 in singles and Port.HTTPS in singles
    assert 444 not in singles and 6665 not in singles
    assert True not in NumberSet([1], maximum=10)
    assert "443" not in singles and None not in singles and 443.0 not in singles
    assert 6665 in ranged and 22 in ranged and 6670 not in ranged


def test_rule_set_rules_property() -> None:
    specs = [RuleSpec(name=n, notify=("x",), remote_port=(443,)) for n in ("a", "b")]
    rules = RuleSet(specs)
    assert [rule.name for rule in rules.rules] == ["a", "b"]
    alerts = rules.match(make_event({"remote_port": 443}))
    assert [alert.rule for alert in alerts] == ["a", "b"]
    assert alerts[0].id == alerts[1].id


# -- column typing ---------------------------------------------------------------------


def reference_columns(raw: Mapping[str, object]) -> dict[str, ColumnValue]:
    """Column typing written out plainly: the contract of normalise_columns."""
    out: dict[str, ColumnValue] = {}
    for key, value in raw.items():
        if value is None:
            out[key] = None
        elif key in NUMERIC_COLUMNS:
            if isinstance(value, bool):
                raise ParseError("bool")
            if isinstance(value, int):
                out[key] = value
            elif isinstance(value, float):
                if not value.is_integer():
                    raise ParseError("float")
                out[key] = int(value)
            elif isinstance(value, str):
                if value == "":
                    out[key] = None
                    continue
                digits = value.removeprefix("-")
                if not (digits.isascii() and digits.isdigit() and len(digits) <= MAX_INT_DIGITS):
                    raise ParseError("text")
                out[key] = int(value)
            else:
                raise ParseError("shape")
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = str(value)
        else:
            raise ParseError("shape")
    return out


VALUES = st.one_of(
    st.sampled_from(["", "0", "443", "007", "-12", "-", "1.5", " 1", "1_000", "+1", "\u0661", "x"]),
    st.sampled_from(["9" * MAX_INT_DIGITS, "9" * (MAX_INT_DIGITS + 1), "curl"]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=1),
    st.text(max_size=5),
)
KEYS = st.sampled_from([*sorted(NUMERIC_COLUMNS), "name", "cmdline", "remote_address", "x_new"])


@settings(max_examples=400, deadline=None)
@given(raw=st.dictionaries(KEYS, VALUES, max_size=8), repeat=st.integers(1, 3))
def test_normalise_columns_agrees_with_reference(raw: dict[str, object], repeat: int) -> None:
    before = dict(raw)
    try:
        expected: dict[str, ColumnValue] | None = reference_columns(raw)
    except ParseError:
        expected = None
    for _ in range(repeat):  # again, with the conversion cache warm
        if expected is None:
            with pytest.raises(ParseError):
                normalise_columns(raw)
        else:
            got = normalise_columns(raw)
            assert got == expected
            assert list(got) == list(raw)  # the row's key order
            assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
            assert got is not raw
    assert raw == before  # the row is not changed
    if expected is not None:  # any Mapping, not only a dict
        assert normalise_columns(MappingProxyType(raw)) == expected


def test_cached_text_still_typed_and_checked_per_column() -> None:
    column = next(iter(sorted(REPEATING_COLUMNS)))
    assert normalise_columns({column: "443"}) == {column: 443}
    assert normalise_columns({column: "443"}) == {column: 443}  # from the cache
    assert normalise_columns({"name": "443"}) == {"name": "443"}  # text stays text
    with pytest.raises(ParseError, match=rf"columns\.{column}: not an integer: ' 443'"):
        normalise_columns({column: " 443"})
    assert normalise_columns({column: ""}) == {column: None}


def test_conversion_cache_is_bounded() -> None:
    column = next(iter(sorted(REPEATING_COLUMNS)))
    for value in range(INT_CACHE_ENTRIES * 2 + 5):
        assert normalise_columns({column: str(value)})[column] == value
        assert len(values_module._INT_CACHE) <= INT_CACHE_ENTRIES


def test_parse_line_types_a_full_row() -> None:
    cols = {name: "12" for name in sorted(NUMERIC_COLUMNS)} | {"name": "curl", "pid": ""}
    line = (
        '{"name":"pack_tracked_connections_tracked_connections","hostIdentifier":"h",'
        '"unixTime":1,"epoch":0,"counter":2,"action":"added","columns":'
        + str(cols).replace("'", '"')
        + "}"
    )
    (event,) = parse_line(line)
    assert event.columns == reference_columns(cols)
    assert event.columns["pid"] is None and event.columns["socket"] == 12


# -- the event form's fast path ---------------------------------------------------------

PACKS = frozenset({"tracked_connections"})
TEXTS = st.one_of(st.sampled_from(["", "h1", "Tue Sep  2 07:05:09 2025 UTC"]), st.text(max_size=4))
NUMBERS = st.sampled_from([0, 1, 1756796709, -3, "17", "x", 1.0, 1.5, True, None, [1]])


@st.composite
def event_docs(draw: st.DrawFn) -> dict[str, object]:
    """Event-form documents: mostly as osquery writes them, each member sometimes of
    another type, missing, or joined by an unknown member."""
    doc: dict[str, object] = {
        "name": draw(
            st.one_of(
                st.sampled_from(
                    [
                        "pack_tracked_connections_tracked_connections",
                        "pack/Global/tracked_connections",
                        "other",
                        "",
                    ]
                ),
                NUMBERS,
            )
        ),
        "hostIdentifier": draw(st.one_of(TEXTS, NUMBERS)),
        "calendarTime": draw(st.one_of(TEXTS, NUMBERS)),
        "unixTime": draw(NUMBERS),
        "epoch": draw(NUMBERS),
        "counter": draw(NUMBERS),
        "numerics": draw(st.sampled_from([False, True, "x", None])),
        "columns": draw(
            st.one_of(
                st.dictionaries(KEYS, VALUES, max_size=8),
                st.sampled_from([None, [], "x", {}]),
            )
        ),
        "action": draw(st.sampled_from(["added", "removed", "snapshot", "bogus", "", 1, None])),
    }
    if draw(st.booleans()):
        doc["decorations"] = draw(
            st.one_of(
                st.dictionaries(
                    st.sampled_from(["hostname", "host_uuid"]),
                    st.one_of(TEXTS, st.integers(), st.none()),
                    max_size=2,
                ),
                st.sampled_from([None, [], "x"]),
            )
        )
    for key in draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):
        doc.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.sampled_from(["snapshot", "diffResults", "log_type", "hostname"]))] = "x"
    return doc


def reference_parse(line: bytes, strict: frozenset[str] | None) -> list[Event]:
    """The general path: :func:`_load` and :func:`_parse_doc`, no event-form shortcut."""
    doc, escapes = _load(line)
    return _parse_doc(doc, PACKS, escapes, strict)


@settings(max_examples=1500, deadline=None)
@given(doc=event_docs(), strict=st.sampled_from([None, frozenset({"tracked_connections"}), PACKS]))
def test_event_form_fast_path_equals_the_general_path(
    doc: dict[str, object], strict: frozenset[str] | None
) -> None:
    line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        expected: list[Event] | str = reference_parse(line, strict)
    except ParseError as err:
        expected = str(err)
    try:
        got: list[Event] | str = parse_line(line, PACKS, strict)
    except ParseError as err:
        got = str(err)
    assert got == expected
    if isinstance(got, list) and isinstance(expected, list):
        for a, b in zip(got, expected, strict=True):
            assert [type(v) for v in a.columns.values()] == [
                type(v) for v in b.columns.values()
            ]
            assert dict(a.decorations) == dict(b.decorations)
            assert type(a) is Event


def test_event_form_fast_path_is_taken_for_osquery_lines() -> None:
    for decorations in ({}, {"decorations": {"hostname": "h", "host_uuid": "u"}}):
        doc = {
            "name": "pack_tracked_connections_tracked_connections",
            "hostIdentifier": "h",
            "calendarTime": "Tue Sep  2 07:05:09 2025 UTC",
            "unixTime": 1756796709,
            "epoch": 0,
            "counter": 3,
            "numerics": False,
            "columns": {"pid": "12", "name": "curl", "remote_port": ""},
            "action": "removed",
            **decorations,
        }
        line = json.dumps(doc).encode()
        events = _event_form(line, PACKS, None)
        assert events is not None
        assert events == reference_parse(line, None)
        assert events[0].columns["pid"] == 12 and events[0].columns["remote_port"] is None


LINE = (
    b'{"name":"pack_tracked_connections_tracked_connections","hostIdentifier":"h",'
    b'"calendarTime":"Tue Sep  2 07:05:09 2025 UTC","unixTime":1756796709,"epoch":0,'
    b'"counter":3,"numerics":false,"columns":{"pid":"12","name":"curl","remote_port":"",'
    b'"uid":"1000"},"action":"added","decorations":{"hostname":"h"}}'
)


@pytest.mark.parametrize(
    "extra",
    [
        b',"name":"pack_tracked_connections_other"',  # a member twice: the last one counts
        b',"columns":{"pid":"x"}',
        b',"unixTime":"17"',
        b',"decorations":{"hostname":7}',
        b',"numerics":{"x":[1]}',
        b',"hostname":"top-level decoration"',
        b',"numerics":' + b"[" * 3000 + b"]" * 3000,  # deeper than the decoders go
        b',"numerics":' + b"[" * 200_000 + b"]" * 200_000,
    ],
)
def test_event_form_fast_path_on_repeated_and_odd_members(extra: bytes) -> None:
    line = LINE[:-1] + extra + b"}"
    try:
        expected: list[Event] | str = reference_parse(line, None)
    except ParseError as err:
        expected = str(err)
    try:
        got: list[Event] | str = parse_line(line, PACKS)
    except ParseError as err:
        got = str(err)
    assert got == expected


@settings(max_examples=1500, deadline=None)
@given(
    cuts=st.lists(
        st.tuples(st.integers(0, len(LINE)), st.integers(0, 3), st.binary(max_size=3)),
        min_size=1,
        max_size=3,
    )
)
def test_event_form_fast_path_equals_the_general_path_on_corrupted_lines(
    cuts: list[tuple[int, int, bytes]],
) -> None:
    """Bytes cut out of and put into an osquery line (invalid JSON, invalid UTF-8,
    other types, duplicate or unknown members): the same events or the same error."""
    line = LINE
    for at, drop, insert in cuts:
        line = line[:at] + insert + line[at + drop :]
    try:
        expected: list[Event] | str = reference_parse(line, None)
    except ParseError as err:
        expected = str(err)
    try:
        got: list[Event] | str = parse_line(line, PACKS)
    except ParseError as err:
        got = str(err)
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(doc=event_docs())
def test_new_event_equals_the_dataclass_constructor(doc: dict[str, object]) -> None:
    fields = [f.name for f in dataclasses.fields(Event)]
    values = [doc.get(f, f) for f in fields[:-2]] + [{"hostname": "h"}, {}]
    built = new_event(*values)  # type: ignore[arg-type]
    assert type(built) is Event
    assert built == Event(*values)  # type: ignore[arg-type]
    assert [getattr(built, f) for f in fields] == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "x"  # type: ignore[misc]


# -- Event -----------------------------------------------------------------------------


def make_event(columns: dict[str, ColumnValue]) -> Event:
    return shared_event(columns=columns, counter=1, calendar_time="", decorations={})


def test_event_constructor_keeps_the_dataclass_contract() -> None:
    params = list(inspect.signature(Event).parameters)
    assert params == [f.name for f in dataclasses.fields(Event)]
    one = make_event({"pid": 1})
    two = make_event({"pid": 1})
    assert one == two and hash(one) == hash(two)
    assert one.decorations == {} and one.decorations is not two.decorations
    positional = Event(*(getattr(one, f.name) for f in dataclasses.fields(Event)))
    assert positional == one
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.counter = 2  # type: ignore[misc]
    changed = dataclasses.replace(one, action="removed")
    assert (changed.action, changed.columns, changed.counter) == ("removed", one.columns, 1)
    assert repr(one).startswith("Event(name='pack_tracked_connections_tracked_connections'")
    with pytest.raises(TypeError):
        Event("n", None, "q", "h", "", 1, 0, 1, "added")  # type: ignore[call-arg]
