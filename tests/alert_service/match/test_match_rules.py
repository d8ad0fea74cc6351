"""Match stage: anchored, typed rule conditions (tables)."""

from __future__ import annotations

from typing import Any

import pytest
from deliver_support import make_event

from alert_service.errors import MatchError
from alert_service.match import (
    UNKNOWN,
    AddressSet,
    AddressSpec,
    PortSet,
    ProcessSpec,
    RuleSet,
    RuleSpec,
    TextMatcher,
    TextPatternSpec,
    check_rule,
    compile_rule,
    parse_address,
)
from alert_service.parse import Action, ColumnValue, Event


def event(
    action: Action = "added",
    host: str = "web-01",
    query_name: str = "pack_tracked_connections_tracked_connections",
    decorations: dict[str, str] | None = None,
    **columns: ColumnValue,
) -> Event:
    row: dict[str, ColumnValue] = {
        "remote_address": "93.184.216.34",
        "remote_port": 443,
        "name": "curl",
        "path": "/usr/bin/curl",
        "pid": 812,
    }
    return make_event(
        action=action,
        host=host,
        query_name=query_name,
        decorations=decorations or {},
        columns=row,
        counter=1,
        calendar_time="",
        **columns,
    )


def rule(**kw: Any) -> RuleSpec:
    return RuleSpec(name=kw.pop("name", "r"), notify=("local",), **kw)


@pytest.mark.parametrize(
    ("ports", "port", "hit"),
    [
        ([443], 443, True),
        ([443], 8443, False),
        ([443], 4430, False),
        ([8443], 443, False),
        (["6660-6669"], 6660, True),
        (["6660-6669"], 6665, True),
        (["6660-6669"], 6669, True),
        (["6660-6669"], 6670, False),
        (["6660-6669"], 666, False),
        ([4444, "6660-6669", "22"], 22, True),
        (["1-10", "5-20"], 15, True),
        ([443], None, False),
        ([0], 0, True),
    ],
)
def test_ports(ports: list[int | str], port: int | None, hit: bool) -> None:
    assert (port in PortSet(ports)) is hit
    assert compile_rule(rule(remote_port=tuple(ports))).matches(event(remote_port=port)) is hit


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("70000", "out of range"),
        ("9-1", "start is above end"),
        ("http", "invalid port"),
        (-1, "out"),
    ],
)
def test_bad_ports(item: int | str, message: str) -> None:
    with pytest.raises(MatchError, match=message) as info:
        PortSet([443, item], ".remote_port")
    assert info.value.where == ".remote_port[1]"


@pytest.mark.parametrize(
    ("include", "exclude", "address", "hit"),
    [
        (["10.0.0.0/8"], [], "10.0.0.1", True),
        (["10.0.0.0/8"], [], "110.0.0.15", False),
        (["10.0.0.1"], [], "10.0.0.1", True),
        (["10.0.0.1"], [], "10.0.0.10", False),
        (["10.0.0.1"], [], "110.0.0.1", False),
        (["10.0.0.0/8"], [], "::ffff:10.0.0.1", True),
        (["10.0.0.0/8"], [], "::ffff:110.0.0.1", False),
        (["::ffff:10.0.0.0/104"], [], "10.1.2.3", True),
        (["2001:db8::/32"], [], "2001:db8::1", True),
        (["2001:db8::/32"], [], "2001:db9::1", False),
        (["2001:db8::/32"], [], "10.0.0.1", False),
        (["fe80::/10"], [], "fe80::1%eth0", True),
        (["0.0.0.0/0"], [], "0.0.0.0", False),
        (["::/0"], [], "::", False),
        (["0.0.0.0/0"], [], "", False),
        (["0.0.0.0/0"], [], None, False),
        (["0.0.0.0/0"], [], "not-an-ip", False),
        ([], ["10.0.0.0/8", "192.168.0.0/16"], "10.9.9.9", False),
        ([], ["10.0.0.0/8", "192.168.0.0/16"], "::ffff:192.168.1.1", False),
        ([], ["10.0.0.0/8", "192.168.0.0/16"], "8.8.8.8", True),
        ([], ["10.0.0.0/8"], "", False),
        (["10.0.0.0/8"], ["10.1.0.0/16"], "10.1.2.3", False),
        (["10.0.0.0/8"], ["10.1.0.0/16"], "10.2.2.3", True),
    ],
)
def test_addresses(include: list[str], exclude: list[str], address: str | None, hit: bool) -> None:
    spec = rule(remote_address=AddressSpec(tuple(include), tuple(exclude)))
    assert compile_rule(spec).matches(event(remote_address=address)) is hit


def test_address_set_merges_ranges() -> None:
    cidrs = AddressSet(["10.0.0.0/9", "10.128.0.0/9", "10.1.0.0/16", "2001:db8::/32"])
    assert len(cidrs) == 2
    assert parse_address("10.255.255.255") in cidrs
    assert parse_address("11.0.0.0") not in cidrs
    assert "10.0.0.1" not in cidrs  # only parsed addresses are members


@pytest.mark.parametrize("cidr", ["10.0.0.1/8", "10.0.0.0/33", "bogus", "10.0.0.0/8 "])
def test_bad_cidrs(cidr: str) -> None:
    with pytest.raises(MatchError, match="invalid CIDR") as info:
        AddressSet(["192.0.2.0/24", cidr], ".remote_address.include")
    assert info.value.where == ".remote_address.include[1]"


@pytest.mark.parametrize(
    ("patterns", "value", "hit"),
    [
        (TextPatternSpec(exact=("web-01",)), "web-01", True),
        (TextPatternSpec(exact=("web-01",)), "web-011", False),
        (TextPatternSpec(exact=("web-01",)), "WEB-01", False),
        (TextPatternSpec(glob=("web-*",)), "web-01", True),
        (TextPatternSpec(glob=("web-*",)), "xweb-01", False),
        (TextPatternSpec(glob=("web-?1",)), "web-01", True),
        (TextPatternSpec(regex=("web-[0-9]+",)), "web-01", True),
        (TextPatternSpec(regex=("web-[0-9]+",)), "web-01.example.com", False),
        (TextPatternSpec(regex=("web",)), "web-01", False),
        (TextPatternSpec(regex=("443",)), "8443", False),
        (TextPatternSpec(glob=("*",)), None, False),
        (TextPatternSpec(regex=(".*",)), "", False),
        (TextPatternSpec(exact=(UNKNOWN,)), None, True),
        (TextPatternSpec(exact=(UNKNOWN,)), "", True),
        (TextPatternSpec(glob=(UNKNOWN,)), None, True),
        (TextPatternSpec(exact=(UNKNOWN,)), "curl", False),
    ],
)
def test_text_patterns_are_anchored(
    patterns: TextPatternSpec, value: str | None, hit: bool
) -> None:
    assert TextMatcher(patterns).matches(value) is hit


def test_bad_regex_location() -> None:
    with pytest.raises(MatchError, match="invalid regex") as info:
        TextMatcher(TextPatternSpec(regex=("ok", "(")), ".process.name")
    assert info.value.where == ".process.name.regex[1]"


@pytest.mark.parametrize(
    ("host", "decorations", "hit"),
    [
        ("web-01", {}, True),
        ("4C4C4544-UUID", {"hostname": "web-01"}, True),
        ("4C4C4544-UUID", {}, False),
        ("db-01", {"hostname": "db-01.example.com"}, False),
    ],
)
def test_host_uses_identifier_then_hostname_decoration(
    host: str, decorations: dict[str, str], hit: bool
) -> None:
    spec = rule(host=TextPatternSpec(glob=("web-*",)))
    assert compile_rule(spec).matches(event(host=host, decorations=decorations)) is hit


def test_process_conditions_and_unknown_process() -> None:
    shells = compile_rule(rule(process=ProcessSpec(name=TextPatternSpec(exact=("bash", "nc")))))
    unknown = compile_rule(rule(process=ProcessSpec(name=TextPatternSpec(exact=(UNKNOWN,)))))
    any_port = compile_rule(rule(remote_port=(443,)))
    no_name = event(name="", path="")
    missing = event(name="<drop>", path="<drop>")
    assert shells.matches(event(name="nc")) is True
    assert shells.matches(event()) is False
    assert shells.matches(no_name) is False
    assert unknown.matches(no_name) is True
    assert unknown.matches(missing) is True
    assert unknown.matches(event()) is False
    # Rules without process conditions never drop events of unknown processes.
    assert any_port.matches(no_name) is True
    assert any_port.matches(missing) is True


def test_process_path_glob() -> None:
    tmp = compile_rule(rule(process=ProcessSpec(path=TextPatternSpec(glob=("/tmp/*",)))))
    assert tmp.matches(event(path="/tmp/x/nc")) is True
    assert tmp.matches(event(path="/usr/tmp/nc")) is False


@pytest.mark.parametrize(
    ("actions", "action", "hit"),
    [
        (("added",), "added", True),
        (("added",), "removed", False),
        (("added",), "snapshot", False),
        (("added", "removed"), "removed", True),
        (("snapshot",), "snapshot", True),
    ],
)
def test_actions(actions: tuple[Action, ...], action: Action, hit: bool) -> None:
    assert compile_rule(rule(actions=actions)).matches(event(action=action)) is hit


def test_default_action_is_added_only() -> None:
    assert RuleSpec(name="r", notify=("x",)).actions == ("added",)


@pytest.mark.parametrize(
    ("queries", "hit"),
    [
        (("tracked_connections",), True),
        (("pack_tracked_connections_tracked_connections",), True),
        (("other",), False),
    ],
)
def test_queries(queries: tuple[str, ...], hit: bool) -> None:
    assert compile_rule(rule(queries=queries)).matches(event()) is hit


def test_conditions_are_anded_and_several_rules_match() -> None:
    rules = RuleSet(
        [
            rule(name="port", remote_port=(443,)),
            rule(
                name="port-and-net", remote_port=(443,), remote_address=AddressSpec(("10.0.0.0/8",))
            ),
            rule(name="curl", process=ProcessSpec(name=TextPatternSpec(exact=("curl",)))),
        ]
    )
    alerts = rules.match(event())
    assert [a.rule for a in alerts] == ["port", "curl"]
    assert len({a.id for a in alerts}) == 1
    assert alerts[0].notify == ("local",)
    assert [a.rule for a in rules.match(event(remote_address="10.1.1.1"))] == [
        "port",
        "port-and-net",
        "curl",
    ]
    assert rules.match(event(action="removed")) == []


def test_rule_set_names_the_bad_rule() -> None:
    with pytest.raises(MatchError, match="rule 'bad'"):
        RuleSet([rule(name="bad", remote_port=("99999",))])


def test_check_rule_reports_every_problem() -> None:
    spec = rule(
        remote_port=(443, "99999", "9-1"),
        remote_address=AddressSpec(("10.0.0.1/8",), ("bogus",)),
        host=TextPatternSpec(regex=("(",)),
        process=ProcessSpec(
            name=TextPatternSpec(regex=("[",)), path=TextPatternSpec(regex=("ok",))
        ),
    )
    assert [e.where for e in check_rule(spec)] == [
        ".host.regex[0]",
        ".process.name.regex[0]",
        ".remote_address.include[0]",
        ".remote_address.exclude[0]",
        ".remote_port[1]",
        ".remote_port[2]",
    ]


def test_alert_payload_shape() -> None:
    (alert,) = RuleSet([rule(name="any")]).match(
        event(decorations={"hostname": "web-01.example.com"})
    )
    payload = alert.as_dict()
    assert payload == {
        "id": alert.id,
        "rule": "any",
        "severity": None,
        "host": "web-01",
        "host_name": "web-01.example.com",
        "host_uuid": None,
        "query": "pack_tracked_connections_tracked_connections",
        "action": "added",
        "unix_time": 1756796709,
        "epoch": 0,
        "counter": 1,
        "connection": {
            "remote_address": "93.184.216.34",
            "remote_port": 443,
            "name": "curl",
            "path": "/usr/bin/curl",
            "pid": 812,
        },
        "decorations": {"hostname": "web-01.example.com"},
    }
    assert len(alert.id) == 32
    payload["connection"]["pid"] = 1
    assert alert.event.columns["pid"] == 812


def test_alert_id_depends_on_identity_fields() -> None:
    rules = RuleSet([rule()])
    (base,) = rules.match(event())
    (same,) = rules.match(event())
    (other_host,) = rules.match(event(host="web-02"))
    (other_row,) = rules.match(event(pid=813))
    assert base.id == same.id
    assert len({base.id, other_host.id, other_row.id}) == 3
