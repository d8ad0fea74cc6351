"""Benchmark the worst case of rule regexes: RE2 (what rules use) against Python's ``re``.

Usage::

    python benchmarks/regex_bench.py            # a few seconds

A hostile process controls its own command line and name. The pattern style
docs/rules.md shows for a search, ``.*curl.*http.*``, is matched (``fullmatch``, as
rules do) against:

* a 1 MiB command line of ``curl `` repeated, never ``http`` (``re`` backtracks from
  every ``curl``: quadratic time);
* a 131,000-character name of ``curl`` repeated.

RE2 is timed on the full inputs; Python's ``re`` on inputs of 4 KiB and 16 KiB only
(the full ones take minutes), and its time per input byte is printed so the growth
shows. Both engines run in this process, one thread, same machine.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from alert_service.match.text import compile_regex  # noqa: E402

PATTERN = ".*curl.*http.*"


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> int:
    """Print the timings; exit 0."""
    rule = compile_regex(PATTERN)
    backtracking = re.compile(PATTERN)
    cmdline = ("curl " * ((1 << 20) // 5 + 1))[: 1 << 20]
    name = "curl" * (131_000 // 4)
    print(f"regex_bench: {PATTERN!r}, fullmatch, python {sys.version.split()[0]}")
    for label, text in (("1 MiB cmdline", cmdline), ("131k-char name", name)):
        seconds = timed(lambda text=text: rule.fullmatch(text))
        per_char = seconds / len(text) * 1e9
        print(f"  RE2  {label:>15}: {seconds * 1000:9.2f} ms  ({per_char:.2f} ns/char)")
    for size in (4096, 16384):
        text = cmdline[:size]
        seconds = timed(lambda text=text: backtracking.fullmatch(text))
        re2_seconds = timed(lambda text=text: rule.fullmatch(text))
        ratio = seconds / max(re2_seconds, 1e-9)
        print(
            f"  re   {size:>9} chars: {seconds * 1000:9.2f} ms  ({seconds / size * 1e9:.0f} "
            f"ns/char; RE2 on the same: {re2_seconds * 1000:.3f} ms, ratio {ratio:.0f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
