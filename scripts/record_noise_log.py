"""Record this host's ordinary connections as an osquery result log, for noise tests.

Usage::

    python scripts/record_noise_log.py --minutes 10 --ship-secs 60 \
        --out tests/alert_service/data/noise/noise-60s.log.gz

1. Record: the osqueryd stand-in (osqueryd_standin) launches the extension
   (``python -m extension``, kernel events where the host allows them) and runs the
   shipped pack (packs/tracked_connections.conf) every 2 s, differential, for
   ``--minutes``; its ``osqueryd.results.log`` is the recording. Nothing else is
   started: the rows are whatever this host does meanwhile.
2. Keep the first ``--ship-secs`` seconds of it (by ``unixTime``) and write them
   gzip-compressed to ``--out`` (``--raw-out`` keeps the whole recording).
3. :func:`stretch` (used by the noise test) makes an hour of it: copy ``k`` (0, 1, ...)
   is appended with every time shifted by ``k`` times the excerpt's length
   (``unixTime`` and the ``first_seen``/``last_seen``/``start_time`` columns) and every
   ``pid``/``parent`` moved up by ``k`` times 1 000 000, so each copy's processes are
   new processes. Without the pid shift, a connection made once per excerpt would come
   back at an exact period in every copy and look like a beacon; with it, a process's
   traffic never spans two copies.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.osqueryd import PACK, short_tmpdir, standin_with_extension  # noqa: E402

_TIME_COLUMNS = ("first_seen", "last_seen", "start_time")
_PID_COLUMNS = ("pid", "parent")
PID_SHIFT = 1_000_000


def record(minutes: float) -> list[str]:
    """Run the stand-in with the extension and the pack for ``minutes``; return its lines."""
    with short_tmpdir() as workdir, standin_with_extension(workdir, run_scheduler=True) as osqd:
        osqd.add_pack("tracked_connections", PACK)
        time.sleep(minutes * 60)
        log = osqd.results_log_path
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def shifted(line: str, secs: int, pids: int, host: str | None) -> str:
    """``line`` with its times moved by ``secs`` and its pids by ``pids``."""
    doc = json.loads(line)
    doc["unixTime"] = int(doc["unixTime"]) + secs
    if host is not None:
        doc["hostIdentifier"] = host
    columns = doc.get("columns", {})
    for name in _TIME_COLUMNS:
        value = columns.get(name)
        if value not in (None, "", "0"):
            columns[name] = str(int(value) + secs)
    for name in _PID_COLUMNS:
        value = columns.get(name)
        if value not in (None, "", "0", "-1"):
            columns[name] = str(int(value) + pids)
    return json.dumps(doc, separators=(",", ":"))


def stretch(lines: list[str], hour_secs: int, host: str | None) -> list[str]:
    """Copies of ``lines`` shifted end to end until ``hour_secs`` are covered."""
    times = [int(json.loads(x)["unixTime"]) for x in lines]
    length = max(times) - min(times) + 2  # one query interval after the last run
    out: list[str] = []
    k = 0
    while k * length < hour_secs:
        out += [shifted(x, k * length, k * PID_SHIFT, host) for x in lines]
        k += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ship-secs", type=int, default=60, help="seconds kept in --out")
    parser.add_argument("--raw-out", type=Path, default=None, help="also keep the recording")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    lines = record(args.minutes)
    if not lines:
        print("nothing was logged", file=sys.stderr)
        return 1
    if args.raw_out is not None:
        args.raw_out.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    first = int(json.loads(lines[0])["unixTime"])
    kept = [x for x in lines if int(json.loads(x)["unixTime"]) < first + args.ship_secs]
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as f:
        f.writelines(x + "\n" for x in kept)
    print(f"recorded {len(lines)} lines, wrote the first {len(kept)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
