"""``remote_hostname`` conditions, domain list files and ``any_of``.

Names are compared in the form the extension writes (lower-case, ACE, no trailing dot);
rows here carry what the extension would log for real lookups.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.errors import ConfigError
from alert_service.match import RuleSet, RuleSpec, check_rule, compile_rule, rule_spec_from_config
from alert_service.match.columns import needed_columns
from alert_service.match.domains import (
    DomainList,
    labels,
    normalize_name,
    normalize_pattern,
    parse_domain_lines,
    suffixes,
)
from alert_service.match.hostnames import HostnameSpec


def rule(**kw: Any) -> RuleSpec:
    return RuleSpec(name=kw.pop("name", "r"), notify=("hook",), **kw)


def hits(spec: HostnameSpec, name: str | None, source: str | None = "process") -> bool:
    event = make_event(
        remote_hostname=name if name is not None else "<drop>",
        remote_hostname_source=source if source is not None else "<drop>",
    )
    return compile_rule(rule(remote_hostname=spec)).matches(event)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- the compared form


@pytest.mark.parametrize(
    ("written", "compared"),
    [
        ("api.evil.example", "api.evil.example"),
        ("API.Evil.Example.", "api.evil.example"),  # case and the root's dot
        ("Bücher.example", "xn--bcher-kva.example"),  # UTS-46 then ACE
        ("bücher。example", "xn--bcher-kva.example"),  # ideographic full stop
        ("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", "example.com"),  # full-width
        ("faß.example", "xn--fa-hia.example"),  # non-transitional: ß stays
        ("xn--BCHER-kva.example", "xn--bcher-kva.example"),
        ("_dmarc.example", "_dmarc.example"),  # ASCII labels are only lower-cased
        ("a\\.b.example", "a\\.b.example"),  # dnspython's escaped dot
        ("a\\032b.example", "a\\032b.example"),
    ],
)
def test_names_are_compared_lower_case_in_ace_form(written: str, compared: str) -> None:
    assert normalize_name(written) == compared


@pytest.mark.parametrize("bad", ["", ".", "a..b", "a b.example", "a\tb", "\u0661\u0031.example"])
def test_names_that_are_not_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_name(bad)


def test_escaped_dots_do_not_split_labels() -> None:
    assert labels("a\\.b.example") == ["a\\.b", "example"]
    assert suffixes("x.a\\.b.example") == ["x.a\\.b.example", "a\\.b.example", "example"]
    assert suffixes("a.b.example") == ["a.b.example", "b.example", "example"]


def test_globs_keep_their_stars_and_take_ace_labels() -> None:
    assert normalize_pattern("*.Bücher.example") == "*.xn--bcher-kva.example"
    with pytest.raises(ValueError, match="xn-- form"):
        normalize_pattern("bü*.example")


# ---------------------------------------------------------------- the condition


@pytest.mark.parametrize(
    ("spec", "name", "hit"),
    [
        (HostnameSpec(exact=("api.evil.example",)), "api.evil.example", True),
        (HostnameSpec(exact=("API.Evil.Example.",)), "api.evil.example", True),
        (HostnameSpec(exact=("api.evil.example",)), "x.api.evil.example", False),
        (HostnameSpec(exact=("api.evil.example",)), "API.EVIL.EXAMPLE", True),  # other tools
        (HostnameSpec(domain=("evil.example",)), "evil.example", True),
        (HostnameSpec(domain=("evil.example",)), "a.b.evil.example", True),
        (HostnameSpec(domain=("evil.example",)), "notevil.example", False),
        (HostnameSpec(domain=("evil.example",)), "evil.example.com", False),
        (HostnameSpec(domain=("*.evil.example",)), "evil.example", True),  # the same meaning
        (HostnameSpec(domain=("example",)), "evil\\.example", False),  # one label
        (HostnameSpec(domain=("bücher.example",)), "shop.xn--bcher-kva.example", True),
        (HostnameSpec(glob=("*.evil-*.example",)), "a.evil-1.example", True),
        (HostnameSpec(glob=("*.evil-*.example",)), "evil-1.example", False),
        (HostnameSpec(glob=("API.*",)), "api.evil.example", True),
        (HostnameSpec(regex=(r"[a-z0-9]{8}\.dyn\.example",)), "0123abcd.dyn.example", True),
        (HostnameSpec(regex=(r"[A-Z]+\.example",)), "evil.example", True),  # any case
        (HostnameSpec(regex=(r"evil",)), "evil.example", False),  # anchored
        (HostnameSpec(exact=("evil.example",)), None, False),  # no name: never
    ],
)
def test_remote_hostname_patterns(spec: HostnameSpec, name: str | None, hit: bool) -> None:
    assert hits(spec, name) is hit


def test_source_asks_for_evidence() -> None:
    strong = HostnameSpec(domain=("evil.example",), source=("process", "namespace"))
    assert hits(strong, "api.evil.example", "process")
    assert hits(strong, "api.evil.example", "namespace")
    assert not hits(strong, "api.evil.example", "host")  # only a guess
    assert not hits(strong, "api.evil.example", None)
    assert not hits(strong, "other.example", "process")
    only = HostnameSpec(source=("process",))  # any name, with that evidence
    assert hits(only, "anything.example", "process")
    assert not hits(only, "anything.example", "host")
    assert not hits(only, None, "process")


def test_an_exclude_entry_can_name_domains() -> None:
    spec = rule(
        remote_hostname=HostnameSpec(glob=("*",)),
        exclude=(rule_spec_from_config(
            {"name": "x", "notify": ["h"], "remote_hostname": {"domain": ["corp.example"]}}),),
    )  # fmt: skip
    compiled = compile_rule(spec)
    assert compiled.matches(make_event(remote_hostname="evil.example"))
    assert not compiled.matches(make_event(remote_hostname="git.corp.example"))


def test_config_maps_remote_hostname() -> None:
    spec = rule_spec_from_config(
        {
            "name": "r",
            "notify": ["h"],
            "remote_hostname": {
                "exact": ["a.example"],
                "domain": ["b.example"],
                "glob": ["*.c.example"],
                "regex": ["d+\\.example"],
                "domain_files": ["/x.txt"],
                "source": ["process"],
            },
        }
    )
    assert spec.remote_hostname == HostnameSpec(
        ("a.example",), ("b.example",), ("*.c.example",), ("d+\\.example",), ("/x.txt",),
        ("process",),
    )  # fmt: skip


def test_config_reports_every_bad_name_with_its_path() -> None:
    doc = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [
            {
                "name": "r",
                "notify": ["h"],
                "remote_hostname": {
                    "exact": ["a..example"],
                    "domain": ["203.0.113.7", "ok.example", "https://evil.example/x"],
                    "glob": ["bü*.example"],
                    "regex": ["("],
                    "domain_files": ["/nonexistent/domains.txt"],
                    "source": ["guess"],
                },
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ={})
    found = [f"{p.path}: {p.message}" for p in info.value.problems]
    assert found == [
        "$.rules[0].remote_hostname.domain[0]: invalid domain name: '203.0.113.7' is an "
        "address, not a domain (address lists take it)",
        "$.rules[0].remote_hostname.domain[2]: invalid domain name: 'https://evil.example/x' "
        "is not a domain name (a URL or a port?)",
        "$.rules[0].remote_hostname.domain_files[0]: cannot read domain list "
        "/nonexistent/domains.txt: No such file or directory",
        "$.rules[0].remote_hostname.exact[0]: invalid domain name: 'a..example' has an "
        "empty label",
        "$.rules[0].remote_hostname.glob[0]: invalid domain name: label 'bü*' mixes glob "
        "characters and non-ASCII letters; write its xn-- form",
        "$.rules[0].remote_hostname.regex[0]: invalid regex '(': missing ): ( (RE2 syntax, "
        "linear-time: no backreferences or lookaround)",
        "$.rules[0].remote_hostname.source[0]: 'guess' is not one of "
        "['process', 'namespace', 'host']",
    ]


# ---------------------------------------------------------------- domain list files


def test_domain_list_format_and_bad_lines() -> None:
    contents = parse_domain_lines(
        [
            "# a feed",
            "evil.example",
            "  *.C2.Example.   # star form, case, root dot",
            "",
            "bücher.example",
            "198.51.100.7",
            "http://x.example/",
            "two words.example",
            b"\xff\xfe.example",
            "a..example",
            "evil.example  # a duplicate is one domain",
        ]
    )
    assert contents.domains == {"evil.example", "c2.example", "xn--bcher-kva.example"}
    assert contents.entries == 4
    assert [n for n, _ in contents.bad_lines] == [6, 7, 8, 9, 10]
    reasons = dict(contents.bad_lines)
    assert "is an address" in reasons[6]
    assert "not UTF-8" in reasons[9]


def test_a_domain_list_reports_bad_lines_and_reloads_on_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alert_service")
    path = write(tmp_path / "domains.txt", "evil.example\nnot a domain\n")
    listed = DomainList(str(path))
    assert "x.evil.example" in listed and "evil.example.org" not in listed
    assert listed.entries == 1 and [n for n, _ in listed.bad_lines] == [2]
    (report,) = [r for r in caplog.records if r.getMessage() == "domain_list_bad_lines"]
    fields = report.alert_fields  # type: ignore[attr-defined]
    assert fields["bad_lines"] == 1 and fields["path"] == str(path)
    assert fields["first"][0].startswith("line 2: ")
    assert not listed.check()  # unchanged
    replace(path, "c2.example\n")
    assert listed.check()
    assert "a.c2.example" in listed and "x.evil.example" not in listed
    path.unlink()
    assert not listed.check()  # a missing file keeps the list
    assert "a.c2.example" in listed
    failures = [r for r in caplog.records if r.getMessage() == "ioc_reload_failed"]
    assert len(failures) == 1


def test_rules_reload_domain_lists_on_their_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "domains.txt", "evil.example\n")
    now = [0.0]
    rules = RuleSet(
        [rule(remote_hostname=HostnameSpec(domain_files=(str(path),)))],
        ioc_check_interval_secs=5.0,
        clock=lambda: now[0],
    )

    def fires(name: str) -> bool:
        return bool(rules.match(make_event(remote_hostname=name)))

    assert fires("api.evil.example")
    assert not fires("api.c2.example")
    replace(path, "c2.example\n")
    now[0] = 4.0
    assert fires("api.evil.example")  # not checked yet
    now[0] = 5.0
    assert not fires("api.evil.example")
    assert fires("api.c2.example")


# ---------------------------------------------------------------- any_of


def test_any_of_matches_an_address_list_or_a_domain_list(tmp_path: Path) -> None:
    addresses = write(tmp_path / "c2-addresses.txt", "198.51.100.0/24\n")
    domains = write(tmp_path / "c2-domains.txt", "evil.example\n")
    spec = rule_spec_from_config(
        {
            "name": "c2",
            "notify": ["h"],
            "direction": ["outbound"],
            "any_of": [
                {"remote_address": {"include_files": [str(addresses)]}},
                {"remote_hostname": {"domain_files": [str(domains)],
                                     "source": ["process", "namespace"]}},
            ],
        }
    )  # fmt: skip
    rules = RuleSet([spec])

    def fires(**columns: Any) -> bool:
        return bool(rules.match(make_event(**columns)))

    assert fires(remote_address="198.51.100.7", remote_hostname="<drop>")  # the address
    assert fires(remote_address="203.0.113.7", remote_hostname="api.evil.example",
                 remote_hostname_source="namespace")  # fmt: skip
    assert not fires(remote_address="203.0.113.7", remote_hostname="api.evil.example",
                     remote_hostname_source="host")  # fmt: skip
    assert not fires(remote_address="203.0.113.7", remote_hostname="good.example")
    # Both at once: still one alert from the rule.
    assert len(rules.match(make_event(remote_address="198.51.100.7",
                                      remote_hostname="api.evil.example"))) == 1  # fmt: skip
    # The rule's other conditions still hold for every branch.
    assert not fires(remote_address="198.51.100.7", direction="inbound")


def test_any_of_problems_are_located_inside_it() -> None:
    spec = rule_spec_from_config(
        {
            "name": "r",
            "notify": ["h"],
            "any_of": [
                {"remote_address": {"include": ["10.0.0.1/8"]}},
                {"remote_hostname": {"exact": ["a..b"]}},
            ],
        }
    )
    assert [e.where for e in check_rule(spec)] == [
        ".any_of[0].remote_address.include[0]",
        ".any_of[1].remote_hostname.exact[0]",
    ]


def test_any_of_entries_refuse_unknown_keys() -> None:
    doc = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [{"name": "r", "notify": ["h"], "any_of": [{"remote_hostnames": {}}]}],
    }
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ={})
    assert [f"{p.path}: {p.message}" for p in info.value.problems] == [
        "$.rules[0].any_of[0]: unknown key remote_hostnames"
    ]


def test_the_example_domain_list_has_no_bad_lines() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "c2-domains.example.txt"
    listed = DomainList(str(example))
    assert listed.bad_lines == ()
    assert listed.domains == {"evil.example", "c2.example", "xn--bcher-shop-9db.example"}
    assert "api.xn--bcher-shop-9db.example" in listed


def test_any_of_needs_its_entries_columns_but_not_the_sparse_name() -> None:
    # Most rows have no name, and the column watch counts an empty value as missing:
    # remote_hostname is not watched.
    spec = rule_spec_from_config(
        {
            "name": "r",
            "notify": ["h"],
            "remote_port": [443],
            "any_of": [
                {"remote_address": {"include": ["198.51.100.0/24"]}},
                {"remote_hostname": {"domain": ["evil.example"]}},
            ],
        }
    )
    assert needed_columns(spec) == ("remote_port", "remote_address")
