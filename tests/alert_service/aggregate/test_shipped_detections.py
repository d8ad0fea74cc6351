"""The shipped detections (examples/detections.yaml) stay quiet on an hour of noise.

The noise is a real recording of a busy build machine (tests/alert_service/data/noise,
README there), stretched to an hour; every aggregation and beacon rule of the shipped
file is replayed over it in time order and none may fire. A control line set (a scan
of another host appended) shows the same replay does fire.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType

import pytest

from alert_service.config import load_config
from alert_service.pipeline import Pipeline, PrintDispatcher

REPO = Path(__file__).resolve().parents[3]
NOISE = REPO / "tests" / "alert_service" / "data" / "noise" / "noise-60s.log.gz"
SHIPPED = REPO / "examples" / "detections.yaml"


def _recorder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "record_noise_log", REPO / "scripts" / "record_noise_log.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hour(tmp_path: Path) -> tuple[Path, list[str]]:
    with gzip.open(NOISE, "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()
    hour = _recorder().stretch(lines, 3600, None)
    path = tmp_path / "noise-hour.log"
    path.write_text("".join(x + "\n" for x in hour), encoding="utf-8")
    return path, hour


def _replay(tmp_path: Path, *paths: Path) -> list[dict[str, object]]:
    config = load_config(str(SHIPPED), environ={"SOC_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert [r.name for r in config.aggregate_rules] == [
        "port-scan",
        "host-sweep",
        "lateral-admin-ports",
        "beacon",
    ]
    out = io.BytesIO()
    pipeline = Pipeline(config, PrintDispatcher(out))
    assert pipeline.replay([str(p) for p in paths]) == []
    assert pipeline.stats.parse_errors == 0
    return [json.loads(x) for x in out.getvalue().splitlines()]


@pytest.mark.timeout(900)
def test_shipped_detections_are_quiet_on_an_hour_of_noise(tmp_path: Path) -> None:
    path, hour = _hour(tmp_path)
    times = [json.loads(x)["unixTime"] for x in (hour[0], hour[-1])]
    assert times[1] - times[0] >= 3600 - 62  # an hour of log time
    assert _replay(tmp_path, path) == []


def _attempts(tmp_path: Path, name: str, targets: list[tuple[str, int]], status: str) -> Path:
    """A log of one process (pid 777001) attempting ``(address, port)`` in turn, ten a
    second, each attempt ending with ``status``."""
    with gzip.open(NOISE, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    rows = []
    for i, (address, port) in enumerate(targets, start=1):
        doc = dict(first)
        doc["unixTime"] = first["unixTime"] + i // 10
        doc["counter"] = 1
        doc["action"] = "added"
        doc["columns"] = {
            **first["columns"],
            "pid": "777001",
            "start_time": "1",
            "direction": "outbound",
            "remote_address": address,
            "remote_port": str(port),
            "local_port": str(40000 + i),
            "status": status,
        }
        rows.append(json.dumps(doc))
    path = tmp_path / name
    path.write_text("".join(x + "\n" for x in rows), encoding="utf-8")
    return path


def test_the_same_replay_fires_on_a_scan(tmp_path: Path) -> None:
    scan = _attempts(tmp_path, "scan.log", [("10.20.30.40", p) for p in range(1, 61)], "refused")
    alerts = _replay(tmp_path, scan)
    assert [(a["rule"], a["aggregate"]["count"]) for a in alerts] == [("port-scan", 50)]  # type: ignore[index]


def test_a_scan_that_times_out_fires(tmp_path: Path) -> None:
    scan = _attempts(
        tmp_path, "scan.log", [("203.0.113.7", p) for p in range(1000, 1060)], "timed_out"
    )
    alerts = _replay(tmp_path, scan)
    assert [(a["rule"], a["aggregate"]["count"]) for a in alerts] == [("port-scan", 50)]  # type: ignore[index]


def test_a_failed_sweep_fires(tmp_path: Path) -> None:
    hosts = [(f"10.9.0.{n}", 445) for n in range(1, 31)]
    sweep = _attempts(tmp_path, "sweep.log", hosts, "unreachable")
    alerts = _replay(tmp_path, sweep)
    # SMB is also an admin port: lateral-admin-ports (attempts of any outcome) fires first
    assert [(a["rule"], a["aggregate"]["count"]) for a in alerts] == [  # type: ignore[index]
        ("lateral-admin-ports", 3),
        ("host-sweep", 25),
    ]


def test_connections_that_succeed_are_not_a_scan(tmp_path: Path) -> None:
    """A client reaching 60 services of one server, then one port on 30 hosts, all
    connected: neither port-scan nor host-sweep counts them (they count failed
    attempts)."""
    services = _attempts(
        tmp_path, "services.log", [("10.20.30.40", p) for p in range(1, 61)], "connected"
    )
    assert _replay(tmp_path, services) == []
    hosts = [(f"10.9.0.{n}", 5900) for n in range(1, 31)]
    fanout = _attempts(tmp_path, "fanout.log", hosts, "connected")
    assert _replay(tmp_path, fanout) == []
