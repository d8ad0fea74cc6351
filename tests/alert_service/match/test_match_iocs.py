"""IOC list files: format, reload on change (mtime/size/inode), keep the old list on a
bad version, rules using them, and correctness at 100k entries against a naive loop."""

from __future__ import annotations

import ipaddress
import logging
import os
import random
from pathlib import Path

import pytest
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.errors import ConfigError, MatchError
from alert_service.match import AddressSpec, IocList, RuleSet, RuleSpec, parse_address
from alert_service.match.iocs import parse_ioc_lines
from tests.helpers.iocs import random_ioc_lines

GOOD = """\
# known bad hosts, 2025-09
198.51.100.7            # a single address
203.0.113.0/24

2001:db8:bad::/48
::ffff:192.0.2.0/120    # IPv4-mapped: an IPv4 network
   10.9.9.9   \n"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def replace(path: Path, text: str) -> None:
    """Atomic replace: a new inode, as feed updaters should do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def addr(text: str) -> object:
    return parse_address(text)


def test_format(tmp_path: Path) -> None:
    ioc = IocList(str(write(tmp_path / "ioc.txt", GOOD)))
    assert ioc.entries == 5
    for hit in ("198.51.100.7", "203.0.113.200", "2001:db8:bad::1", "192.0.2.9", "10.9.9.9"):
        assert addr(hit) in ioc, hit
    for hit in ("::ffff:198.51.100.7", "::ffff:192.0.2.255"):
        assert addr(hit) in ioc, hit
    for miss in ("198.51.100.70", "110.9.9.9", "10.9.9.90", "2001:db8:bae::1", "192.0.3.1"):
        assert addr(miss) not in ioc, miss
    assert "198.51.100.7" not in ioc  # only parsed addresses are members


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("10.0.0.1/8", "has host bits set"),
        ("evil.example.com", "invalid CIDR"),
        ("1.2.3.4 5", "invalid CIDR"),
    ],
)
def test_bad_line_names_file_and_line(line: str, message: str) -> None:
    with pytest.raises(MatchError, match=message) as info:
        parse_ioc_lines(["# header", "192.0.2.1", line], "feed.txt")
    assert str(info.value).startswith("feed.txt: line 3: ")


def test_reload_on_change_keeps_old_list_on_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "ioc.txt", "198.51.100.7\n")
    ioc = IocList(str(path))
    assert not ioc.check()  # unchanged
    replace(path, "198.51.100.8\n")  # new inode
    assert ioc.check()
    assert addr("198.51.100.8") in ioc and addr("198.51.100.7") not in ioc
    with open(path, "a", encoding="utf-8") as fh:  # same inode, new size
        fh.write("203.0.113.0/24\n")
    assert ioc.check()
    assert addr("203.0.113.5") in ioc

    caplog.set_level(logging.INFO, logger="alert_service")
    replace(path, "198.51.100.9\nnot-an-address\n")
    assert not ioc.check()
    assert not ioc.check()  # the same bad version is not parsed (nor logged) again
    failures = [r for r in caplog.records if r.getMessage() == "ioc_reload_failed"]
    assert len(failures) == 1
    fields = failures[0].alert_fields  # type: ignore[attr-defined]
    assert fields["path"] == str(path)
    assert "line 2" in fields["reason"]
    assert fields["entries_kept"] == 2
    assert addr("198.51.100.8") in ioc  # the old list is still in use
    assert addr("198.51.100.9") not in ioc

    path.unlink()
    assert not ioc.check()
    assert addr("198.51.100.8") in ioc
    replace(path, "198.51.100.10\n")
    assert ioc.check()
    assert addr("198.51.100.10") in ioc and addr("198.51.100.8") not in ioc
    reloaded = [r for r in caplog.records if r.getMessage() == "ioc_reloaded"]
    assert len(reloaded) == 1


def test_rules_use_include_and_exclude_files_and_reload_on_their_interval(
    tmp_path: Path,
) -> None:
    bad = write(tmp_path / "bad.txt", "198.51.100.0/24\n2001:db8:bad::/48\n")
    allow = write(tmp_path / "allow.txt", "198.51.100.77\n")
    now = [0.0]
    rules = RuleSet(
        [
            RuleSpec(
                name="ioc",
                notify=("hook",),
                remote_address=AddressSpec(
                    include=("192.0.2.1",),
                    include_files=(str(bad),),
                    exclude_files=(str(allow),),
                ),
            )
        ],
        ioc_check_interval_secs=5.0,
        clock=lambda: now[0],
    )

    def fires(address: str) -> bool:
        return bool(rules.match(make_event(remote_address=address)))

    assert fires("198.51.100.7")
    assert fires("::ffff:198.51.100.7")
    assert fires("2001:db8:bad::10")
    assert fires("192.0.2.1")  # inline include
    assert not fires("198.51.100.77")  # exclude file
    assert not fires("203.0.113.1")
    replace(bad, "203.0.113.0/24\n")
    now[0] = 4.0
    assert fires("198.51.100.7")  # not checked yet
    now[0] = 5.0
    assert not fires("198.51.100.7")
    assert fires("203.0.113.1")
    replace(allow, "203.0.113.1\n")
    assert rules.refresh() == 1  # the pipeline may also check on every poll
    assert not fires("203.0.113.1")


def test_files_shared_between_rules_are_loaded_once(tmp_path: Path) -> None:
    path = str(write(tmp_path / "ioc.txt", "198.51.100.7\n"))
    spec = AddressSpec(include_files=(path,))
    rules = RuleSet(
        [RuleSpec(name=n, notify=("h",), remote_address=spec) for n in ("a", "b")],
    )
    assert len(rules.iocs.lists()) == 1
    assert [a.rule for a in rules.match(make_event())] == ["a", "b"]


def test_config_reports_bad_ioc_files(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.txt", "198.51.100.7\n\n# c\n10.0.0.1/8\n")
    doc = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [
            {
                "name": "r",
                "notify": ["h"],
                "remote_address": {"include_files": [str(bad)], "exclude_files": ["/nope"]},
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ={})
    assert [f"{p.path}: {p.message}" for p in info.value.problems] == [
        "$.rules[0].remote_address.exclude_files[0]: cannot read IOC file /nope: "
        "No such file or directory",
        f"$.rules[0].remote_address.include_files[0]: {bad}: line 4: invalid CIDR "
        "'10.0.0.1/8': 10.0.0.1/8 has host bits set",
    ]


def test_an_ioc_path_with_a_nul_byte_is_a_problem_not_a_crash() -> None:
    doc = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [{"name": "r", "notify": ["h"], "remote_address": {"include_files": ["a\x00"]}}],
    }
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ={})
    assert [f"{p.path}: {p.message}" for p in info.value.problems] == [
        "$.rules[0].remote_address.include_files[0]: cannot read IOC file 'a\\x00': "
        "embedded null byte",
    ]


def test_100k_entries_agree_with_a_naive_loop(tmp_path: Path) -> None:
    rng = random.Random(20250902)
    lines = random_ioc_lines(rng, 100_000)
    path = write(tmp_path / "big.txt", "\n".join(lines) + "\n")
    ioc = IocList(str(path))
    assert ioc.entries == 100_000
    networks = [ipaddress.ip_network(line) for line in lines]
    v4 = [n for n in networks if n.version == 4]
    probes = [
        *(str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(60)),
        *(str(n.network_address + 1) for n in rng.sample(v4, 60)),
        *(str(n.broadcast_address) for n in rng.sample(v4, 30)),
        *(str(n.broadcast_address + 1) for n in rng.sample(v4, 30)),
    ]
    spans = [(int(n.network_address), int(n.broadcast_address)) for n in v4]
    hits = 0
    for text in probes:
        ip = ipaddress.ip_address(text)
        value = int(ip)
        naive = any(lo <= value <= hi for lo, hi in spans)
        assert (ip in ioc) is naive, text
        hits += naive
    assert 30 <= hits < len(probes)  # both outcomes are exercised
