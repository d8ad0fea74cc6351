"""Random IOC lists for tests and benchmarks/match_bench.py."""

from __future__ import annotations

import ipaddress
import random


def random_ioc_lines(rng: random.Random, n: int) -> list[str]:
    """``n`` IOC lines: 60 % IPv4 addresses, 30 % IPv4 CIDRs (/16 to /28), 10 % IPv6 CIDRs."""
    lines: list[str] = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            lines.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        elif kind < 0.9:
            prefix = rng.choice((16, 20, 24, 28))
            lines.append(str(ipaddress.IPv4Network((rng.getrandbits(32), prefix), strict=False)))
        else:
            prefix = rng.choice((48, 64))
            lines.append(str(ipaddress.IPv6Network((rng.getrandbits(128), prefix), strict=False)))
    return lines
