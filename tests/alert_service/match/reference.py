"""The reference matcher: every rule tried on every event, written straight from the
rule documentation (docs/rules.md) with the standard library only.

It shares no code with alert_service.match beyond the spec types, so a property test
comparing the two checks the compiled conditions and the rule index together.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Sequence

from alert_service.match import UNKNOWN, AddressSpec, ConditionsSpec, RuleSpec, TextPatternSpec
from alert_service.parse import Action, ColumnValue, Event

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def text_matches(spec: TextPatternSpec, value: ColumnValue) -> bool:
    """Anchored exact / glob / regex match; an empty value only matches ``<unknown>``."""
    text = None if value is None else str(value)
    if not text:
        return UNKNOWN in spec.exact or UNKNOWN in spec.glob
    return (
        text in spec.exact
        or any(fnmatch.fnmatchcase(text, g) for g in spec.glob)
        or any(re.fullmatch(r, text) for r in spec.regex)
    )


def number_matches(items: Sequence[int | str], value: ColumnValue) -> bool:
    """Integers and ``"a-b"`` ranges; only an ``int`` (not a ``bool``) can match."""
    if not isinstance(value, int) or isinstance(value, bool):
        return False
    for item in items:
        if isinstance(item, int):
            low = high = item
        else:
            first, _, last = item.strip().partition("-")
            low, high = int(first), int(last or first)
        if low <= value <= high:
            return True
    return False


def peer(value: ColumnValue) -> _Address | None:
    """The address of a column value; None when empty, not an address, or unspecified."""
    if not isinstance(value, str) or not value:
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return None if addr.is_unspecified else addr


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def network(text: str) -> _Network:
    """A rule's CIDR; an IPv4-mapped IPv6 network is the IPv4 network it maps."""
    net = ipaddress.ip_network(text)
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def ioc_networks(path: str) -> list[_Network]:
    """The networks of an IOC file (plain addresses and CIDRs, ``#`` comments)."""
    with open(path, encoding="utf-8") as fh:
        texts = [line.split("#", 1)[0].strip() for line in fh]
    return [network(t) for t in texts if t]


def inside(addr: _Address, cidrs: Sequence[str], files: Sequence[str]) -> bool:
    networks = [network(c) for c in cidrs]
    for path in files:
        networks += ioc_networks(path)
    return any(addr.version == n.version and addr in n for n in networks)


def address_matches(spec: AddressSpec, value: ColumnValue) -> bool:
    addr = peer(value)
    if addr is None:
        return False
    if (spec.include or spec.include_files) and not inside(addr, spec.include, spec.include_files):
        return False
    return not inside(addr, spec.exclude, spec.exclude_files)


def holds(spec: ConditionsSpec, event: Event, action: Action) -> bool:
    """True when every configured condition of ``spec`` holds (absent ones do)."""
    cols = event.columns
    checks: list[bool] = []
    if spec.actions is not None:
        checks.append(action in spec.actions)
    if spec.queries is not None and "*" not in spec.queries:
        checks.append(event.name in spec.queries or event.query in spec.queries)
    if spec.host is not None:
        deco = event.decorations
        values = [
            event.host_identifier,
            *(deco.get(k) for k in ("hostname", "fqdn", "computer_name")),
        ]
        present = [v for v in values if v]
        checks.append(
            any(text_matches(spec.host, v) for v in present)
            if present
            else text_matches(spec.host, None)
        )
    if spec.process is not None:
        for column in ("name", "path", "cmdline"):
            patterns = getattr(spec.process, column)
            if patterns is not None:
                checks.append(text_matches(patterns, cols.get(column)))
    if spec.user is not None:
        if spec.user.uid is not None:
            checks.append(number_matches(spec.user.uid, cols.get("uid")))
        if spec.user.name is not None:
            checks.append(text_matches(spec.user.name, cols.get("username")))
    if spec.remote_address is not None and (
        spec.remote_address.include
        or spec.remote_address.include_files
        or spec.remote_address.exclude
        or spec.remote_address.exclude_files
    ):
        checks.append(address_matches(spec.remote_address, cols.get("remote_address")))
    if spec.remote_port is not None:
        checks.append(number_matches(spec.remote_port, cols.get("remote_port")))
    for key in ("local_port", "protocol", "family"):
        items = getattr(spec, key)
        if items is not None:
            checks.append(number_matches(items, cols.get(key)))
    if spec.local_address is not None and (
        spec.local_address.include
        or spec.local_address.include_files
        or spec.local_address.exclude
        or spec.local_address.exclude_files
    ):
        checks.append(address_matches(spec.local_address, cols.get("local_address")))
    if spec.state is not None:
        state = cols.get("state")
        checks.append(state in spec.state or (UNKNOWN in spec.state and state in ("", None)))
    for key in ("parent_name", "parent_path"):
        patterns = getattr(spec, key)
        if patterns is not None:
            checks.append(text_matches(patterns, cols.get(key)))
    if spec.direction is not None:
        direction = cols.get("direction")
        checks.append(
            direction in spec.direction or (UNKNOWN in spec.direction and direction in ("", None))
        )
    return all(checks)


def matching_rules(
    rules: Sequence[RuleSpec], event: Event, action: Action | None = None
) -> list[str]:
    """Names of the rules matching ``event`` (as ``action`` when given), in rule order."""
    seen = event.action if action is None else action
    return [
        rule.name
        for rule in rules
        if rule.enabled
        and holds(rule, event, seen)
        and not any(holds(x, event, seen) for x in rule.exclude)
    ]
