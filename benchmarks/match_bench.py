"""Benchmark remote-address matching against large IOC lists.

Usage::

    python benchmarks/match_bench.py                       # about 20 seconds
    python benchmarks/match_bench.py --entries 1000 100000 --lookups 200000

For each N in ``--entries`` (default 1000 10000 100000), a seeded random IOC file of N
lines (60 % IPv4 addresses, 30 % IPv4 CIDRs /16../28, 10 % IPv6 /48 or /64) is
written to a temporary directory, then:

* ``load``: :class:`alert_service.match.IocList` reading and parsing the file
  (sorted, merged integer ranges per family), milliseconds;
* ``ranges``: merged ranges after parsing;
* ``IocList``: lookups per second of ``addr in ioc`` (one ``bisect``) over
  ``--lookups`` pre-parsed addresses, half of them listed;
* ``rule``: events per second through :meth:`RuleSet.match` with one rule whose
  ``remote_address.include_files`` is that file (address parsing, the IOC lookup and
  the alert building included — what the pipeline pays per event);
* ``naive``: the baseline, measured in the same run: lookups per second of
  ``any(addr in net for net in networks)`` over the :mod:`ipaddress` networks, on
  ``--naive-lookups`` addresses (it is slow, so fewer);
* ``speed-up``: ``IocList`` / ``naive``.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alert_service.match import AddressSpec, IocList, RuleSet, RuleSpec  # noqa: E402
from alert_service.parse import Event  # noqa: E402
from tests.helpers.iocs import random_ioc_lines  # noqa: E402

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def probes(rng: random.Random, lines: list[str], count: int) -> list[IPAddress]:
    """``count`` addresses, about half inside a listed network."""
    listed = [ipaddress.ip_network(line) for line in rng.sample(lines, min(len(lines), count))]
    out: list[IPAddress] = []
    for i in range(count):
        if i % 2 == 0:
            net = listed[i % len(listed)]
            out.append(net.network_address + rng.randrange(net.num_addresses))
        else:
            out.append(ipaddress.IPv4Address(rng.getrandbits(32)))
    return out


def event(address: str) -> Event:
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
            {"remote_address": address, "remote_port": 443, "pid": 1, "name": "curl"}
        ),
        decorations=MappingProxyType({}),
    )


def rate(count: int, secs: float) -> str:
    return f"{count / secs:,.0f}/s" if secs > 0 else "inf"


def bench(entries: int, lookups: int, naive_lookups: int, seed: int, tmp: Path) -> None:
    rng = random.Random(seed + entries)
    lines = random_ioc_lines(rng, entries)
    path = tmp / f"ioc-{entries}.txt"
    path.write_text("# benchmark feed\n" + "\n".join(lines) + "\n", encoding="utf-8")

    started = time.perf_counter()
    ioc = IocList(str(path))
    load_ms = (time.perf_counter() - started) * 1000

    addrs = probes(rng, lines, lookups)
    started = time.perf_counter()
    hits = sum(1 for a in addrs if a in ioc)
    fast_secs = time.perf_counter() - started

    rules = RuleSet(
        [
            RuleSpec(
                name="ioc",
                notify=("hook",),
                remote_address=AddressSpec(include_files=(str(path),)),
            )
        ],
        ioc_check_interval_secs=3600,
    )
    n_events = min(lookups, 50_000)
    events = [event(str(a)) for a in addrs[:n_events]]
    started = time.perf_counter()
    alerts = sum(len(rules.match(e)) for e in events)
    rule_secs = time.perf_counter() - started

    networks = [ipaddress.ip_network(line) for line in lines]
    sample = addrs[:naive_lookups]
    started = time.perf_counter()
    naive_hits = sum(
        1 for a in sample if any(a in net for net in networks if net.version == a.version)
    )
    naive_secs = time.perf_counter() - started
    fast_sample_hits = sum(1 for a in sample if a in ioc)
    assert naive_hits == fast_sample_hits, (naive_hits, fast_sample_hits)

    fast_rate = lookups / fast_secs
    naive_rate = len(sample) / naive_secs
    print(
        f"entries={entries:>7,}  ranges={len(ioc):>7,}  load={load_ms:8.1f} ms  "
        f"IocList={rate(lookups, fast_secs):>14} (hits {hits:,}/{lookups:,})  "
        f"rule={rate(n_events, rule_secs):>12} (alerts {alerts:,})  "
        f"naive={rate(len(sample), naive_secs):>10}  "
        f"speed-up={fast_rate / naive_rate:,.0f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--naive-lookups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20250902)
    args = parser.parse_args(argv)
    print(
        f"python {sys.version.split()[0]}; lookups={args.lookups:,}; "
        f"naive lookups={args.naive_lookups:,}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.entries:
            bench(n, args.lookups, args.naive_lookups, args.seed, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
