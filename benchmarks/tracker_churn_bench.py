"""``generate``'s work in the tracker on a host whose connections come and go.

Usage::

    python benchmarks/tracker_churn_bench.py [--rows 20000] [--churn 0.1] [--steps 30]
        [--compare-tree DIR]

The extension's connection tracker (no sockets, no Thrift: the rows are made up)
holds ``--rows`` open connections of one process. Every step, 2 s of its clock
later, a ``--churn`` share of them is replaced by new connections (the others stay
listed), then the table is asked for, and the reply's pieces are all made, as
sending it does. CPU time per step, over ``--steps`` steps, for:

- ``update``: merging the sample;
- ``pack``: the pack's query, which reads no changing column (``stable_only``);
- ``all``: ``SELECT *``, every column.

Each query kind runs in a tracker of its own, in a child process, one after the
other. With ``--compare-tree DIR`` (an export of another commit, e.g. ``git
archive``), the same runs with DIR's ``extension`` package follow, as the baseline
of the same run; a tree without ``stable_only`` answers both kinds with every
column.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import random, sys, time
from extension.enrich.connections import ConnectionTracker
from extension.model import ProcessInfo, SocketRecord
rows, churn, steps, kind = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
info = ProcessInfo(name="web", path="/usr/bin/web-server", uid=33, username="www-data",
                   cmdline="/usr/bin/web-server --config /etc/web/config.yaml --workers 8",
                   parent=1, parent_name="systemd", parent_path="/usr/lib/systemd/systemd",
                   start_time=1765000000)
def record(i):
    return SocketRecord(pid=7, family=2, protocol=6, local_address="10.0.0.5",
                        local_port=1024 + i % 60000, remote_address=f"203.0.113.{i % 250}",
                        remote_port=443, state="ESTABLISHED", socket=5000 + i, net_namespace=1)
try:
    from extension.enrich.wire import row_pieces  # trees before the arena
except ImportError:
    row_pieces = None
tracker = ConnectionTracker(lambda pid: info, attempt_grace_secs=0)
rng = random.Random(1)
live, made, now = list(range(rows)), rows, 100.0
def query():
    if kind == "pack" and row_pieces is None:
        pieces, _ = tracker.encoded_rows(now, stable_only=True)
    else:
        pieces, _ = tracker.encoded_rows(now)
        if row_pieces is not None:
            pieces = row_pieces(pieces)
    return sum(len(piece) for piece in pieces)
tracker.update([record(i) for i in live], now=now)
query()
merge = asked = 0.0
for _ in range(steps):
    now += 2.0
    for k in rng.sample(range(len(live)), int(len(live) * churn)):
        live[k], made = made, made + 1
    sample = [record(i) for i in live]
    start = time.process_time()
    tracker.update(sample, now=now)
    middle = time.process_time()
    query()
    merge += middle - start
    asked += time.process_time() - middle
print(f"{merge / steps * 1000:.1f} {asked / steps * 1000:.1f} {tracker.tracked}")
"""


def run(tree: Path, args: argparse.Namespace, kind: str) -> tuple[float, float, int]:
    """(update ms, query ms, rows tracked) per step for ``kind`` with ``tree``'s code."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(args.rows), str(args.churn), str(args.steps), kind],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000, help="open connections")
    parser.add_argument("--churn", type=float, default=0.1, help="share replaced per step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compare-tree", type=Path, help="baseline tree, same run")
    args = parser.parse_args(argv)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"tracker churn: {args.rows} rows, {args.churn:.0%} replaced every 2 s, "
          f"{args.steps} steps; CPU ms per step; load average {load}")  # fmt: skip
    trees = [("this tree", REPO)]
    if args.compare_tree is not None:
        trees.append((f"baseline {args.compare_tree}", args.compare_tree.resolve()))
    for name, tree in trees:
        for kind in ("pack", "all"):
            merge, asked, tracked = run(tree, args, kind)
            print(f"  {name:<30} {kind:>4}: update {merge:7.1f}  query {asked:7.1f}  "
                  f"({tracked} rows held)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
