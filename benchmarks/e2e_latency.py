"""Latency from a TCP connect on this host to the webhook that reports it.

Usage::

    python benchmarks/e2e_latency.py [--connections 10]

The whole chain runs for real: the osqueryd stand-in launches the extension
and runs packs/tracked_connections.conf every 2 s (differential, on even
seconds, as osqueryd schedules it); the alert service (`run`, a subprocess)
follows the results log and delivers to a webhook receiver on 127.0.0.1
through its outbox. The script opens one connection to a listener at a time,
at a random point of the 2 s schedule, and prints the min, median and max
time from ``connect()`` returning to the webhook arriving. The baseline in
the same run is the schedule itself: half the pack interval (1 s) is the
mean wait for the next query run that any 2 s poller pays.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from osqueryd_standin import Standin  # noqa: E402
from tests.helpers.receiver import webhook_receiver  # noqa: E402

PACK = ROOT / "packs" / "tracked_connections.conf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=10)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tcl", dir="/tmp"))
    latencies: list[float] = []
    try:
        with (
            webhook_receiver() as receiver,
            socket.create_server(("127.0.0.1", 0), backlog=64) as target,
            Standin(str(workdir / "osquery.em"), workdir / "logs", ephemeral=True) as osqd,
        ):
            port = target.getsockname()[1]
            osqd.launch_extension(
                [sys.executable, "-m", "extension", "--state-file", str(workdir / "ext.state")]
            )
            osqd.wait_for_table("tracked_connections", 20)
            osqd.add_pack("tracked_connections", PACK)
            config = {
                "state_dir": str(workdir / "state"),
                "sources": [{"path": str(osqd.results_log_path), "start_at": "beginning"}],
                "notifiers": [{"name": "hook", "type": "webhook", "url": receiver.url}],
                "rules": [
                    # Every connection comes from this process to one port: no dedup.
                    {
                        "name": "bench",
                        "notify": ["hook"],
                        "remote_port": [port],
                        "dedup_window_secs": 0,
                    }
                ],
            }
            config_path = workdir / "alerts.yaml"
            config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
            service = subprocess.Popen(
                [sys.executable, "-m", "alert_service", "run", "--config", str(config_path)],
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(3)  # past the baseline run
                held = []
                for i in range(args.connections):
                    time.sleep(random.uniform(0.5, 2.5))
                    start = time.monotonic()
                    held.append(socket.create_connection(("127.0.0.1", port)))
                    deadline = start + 30
                    while len(receiver.requests) <= i and time.monotonic() < deadline:
                        time.sleep(0.01)
                    if len(receiver.requests) <= i:
                        print(f"connection {i}: no webhook within 30 s")
                        return 1
                    latencies.append(receiver.requests[i].monotonic - start)
                for conn in held:
                    conn.close()
            finally:
                service.terminate()
                service.wait(timeout=15)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"connect -> webhook over {len(latencies)} connections: "
        f"min {min(latencies):.2f} s, median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s; baseline: mean wait for the next 2 s run 1.00 s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
