"""Benchmark ``remote_hostname`` matching against large domain lists.

Usage::

    python benchmarks/domain_match_bench.py                  # about 15 seconds
    python benchmarks/domain_match_bench.py --entries 1000 100000 --lookups 200000

For each N in ``--entries`` (default 1000 10000 100000), a seeded random domain list of
N lines (two to four labels, a tenth written with a ``*.`` prefix) is written to a
temporary directory, then:

* ``load``: :class:`alert_service.match.domains.DomainList` reading and parsing it, ms;
* ``DomainList``: lookups per second of ``name in listed`` (one set lookup per label)
  over ``--lookups`` names, a third listed domains, a third names under one, a third
  unlisted;
* ``rule``: events per second through :meth:`RuleSet.match` with one rule whose
  ``remote_hostname.domain_files`` is that file, and ``floor``: the same events through
  a rule with only ``queries`` (what any rule costs), both in this run;
* ``naive``: the baseline, in the same run: ``any(name == d or name.endswith("." + d)
  for d in domains)`` on ``--naive-lookups`` names; ``speed-up`` = DomainList / naive.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alert_service.match import RuleSet, RuleSpec  # noqa: E402
from alert_service.match.domains import DomainList  # noqa: E402
from alert_service.match.hostnames import HostnameSpec  # noqa: E402
from alert_service.parse import Event  # noqa: E402


def _label(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(3, 12)))


def domain_lines(rng: random.Random, n: int) -> list[str]:
    """``n`` random domains under ``.example``; a tenth with a ``*.`` prefix."""
    out: list[str] = []
    for i in range(n):
        name = ".".join(_label(rng) for _ in range(rng.randint(1, 3))) + ".example"
        out.append(("*." + name) if i % 10 == 0 else name)
    return out


def probes(rng: random.Random, lines: list[str], count: int) -> list[str]:
    """Listed domains, names under them, and unlisted names, a third each."""
    out: list[str] = []
    for i in range(count):
        listed = rng.choice(lines).removeprefix("*.")
        if i % 3 == 0:
            out.append(listed)
        elif i % 3 == 1:
            out.append(f"{_label(rng)}.{listed}")
        else:
            out.append(f"{_label(rng)}.{_label(rng)}.other.example")
    return out


def event(name: str) -> Event:
    return Event(
        name="pack_tracked_connections_tracked_connections",
        pack="tracked_connections",
        query="tracked_connections",
        host_identifier="web-01",
        calendar_time="",
        unix_time=1756796709,
        epoch=0,
        counter=1,
        action="added",
        columns=MappingProxyType(
            {
                "remote_address": "198.51.100.7",
                "remote_port": 443,
                "pid": 1,
                "remote_hostname": name,
                "remote_hostname_source": "process",
            }
        ),
        decorations=MappingProxyType({}),
    )


def rate(count: int, secs: float) -> str:
    return f"{count / secs:,.0f}/s" if secs > 0 else "inf"


def bench(entries: int, lookups: int, naive_lookups: int, seed: int, tmp: Path) -> None:
    rng = random.Random(seed + entries)
    lines = domain_lines(rng, entries)
    path = tmp / f"domains-{entries}.txt"
    path.write_text("# benchmark feed\n" + "\n".join(lines) + "\n", encoding="utf-8")

    started = time.perf_counter()
    listed = DomainList(str(path))
    load_ms = (time.perf_counter() - started) * 1000
    assert listed.bad_lines == ()

    names = probes(rng, lines, lookups)
    started = time.perf_counter()
    hits = sum(1 for name in names if name in listed)
    fast_secs = time.perf_counter() - started

    spec = HostnameSpec(domain_files=(str(path),))
    rules = RuleSet([RuleSpec(name="ioc", notify=("h",), remote_hostname=spec)],
                    ioc_check_interval_secs=3600)  # fmt: skip
    floor = RuleSet([RuleSpec(name="any", notify=("h",), queries=("nothing",))])
    n_events = min(lookups, 50_000)
    events = [event(name) for name in names[:n_events]]
    started = time.perf_counter()
    alerts = sum(len(rules.match(e)) for e in events)
    rule_secs = time.perf_counter() - started
    started = time.perf_counter()
    for e in events:
        floor.match(e)
    floor_secs = time.perf_counter() - started

    domains = [line.removeprefix("*.") for line in lines]
    sample = names[:naive_lookups]
    started = time.perf_counter()
    naive_hits = sum(
        1 for name in sample if any(name == d or name.endswith("." + d) for d in domains)
    )
    naive_secs = time.perf_counter() - started
    assert naive_hits == sum(1 for name in sample if name in listed)

    fast_rate = lookups / fast_secs
    naive_rate = len(sample) / naive_secs
    print(
        f"entries={entries:>7,}  load={load_ms:8.1f} ms  "
        f"DomainList={rate(lookups, fast_secs):>12} (hits {hits:,}/{lookups:,})  "
        f"rule={rate(n_events, rule_secs):>11} (alerts {alerts:,})  "
        f"floor={rate(n_events, floor_secs):>11}  "
        f"naive={rate(len(sample), naive_secs):>9}  speed-up={fast_rate / naive_rate:,.0f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--naive-lookups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261205)
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}; lookups={args.lookups:,}; "
          f"naive lookups={args.naive_lookups:,}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.entries:
            bench(n, args.lookups, args.naive_lookups, args.seed, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
