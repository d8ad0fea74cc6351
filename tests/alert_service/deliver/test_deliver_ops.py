"""``/metrics`` and ``/health`` over real HTTP while the delivery service runs."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from deliver_support import Answer, make_alert, serve_endpoint

from alert_service.config import build_config
from alert_service.deliver import DeliveryService
from alert_service.deliver.retry import RetryPolicy
from alert_service.notify import (
    WebhookNotifier,
)
from alert_service.ops import MetricsConfig, OpsServer, ServiceMetrics
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import transaction
from alert_service.stats import Stats

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_and_health_endpoints(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    conn = open_state(path)
    stats = Stats(lines_read=7, parse_errors=2, matches=3)
    metrics = ServiceMetrics(stats)
    with serve_endpoint() as endpoint:
        endpoint.default = Answer(500, body=b"down")
        notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
        service = DeliveryService(
            path,
            {"hook": notifier},
            {},
            RetryPolicy(initial_backoff_secs=0.05, max_backoff_secs=0.1, poll_interval_secs=0.05),
            metrics=metrics,
            stats=stats,
        )
        ops = OpsServer(MetricsConfig("127.0.0.1", 0), metrics.registry, service.health)
        port = ops.start()
        base = f"http://127.0.0.1:{port}"
        service.start()
        try:
            with transaction(conn):
                enqueue_alerts(
                    conn,
                    [make_alert(pid=i, remote_address=f"198.51.100.{i}") for i in range(4)],
                    time.time() - 30,
                )
            endpoint.wait_for(2)
            status, ctype, text = get(f"{base}/metrics")
            assert status == 200
            assert ctype.startswith("text/plain")
            values = samples(text)
            assert values["alert_service_lines_read_total"] == 7
            assert values["alert_service_parse_errors_total"] == 2
            assert values["alert_service_matches_total"] == 3
            assert values['alert_service_outbox_pending{destination="hook"}'] == 4
            assert (
                values['alert_service_outbox_oldest_pending_age_seconds{destination="hook"}'] >= 30
            )
            assert values['alert_service_notifications_retried_total{destination="hook"}'] >= 1
            # The only labels are destination (and le of the histogram).
            labels = set(re.findall(r"(\w+)=\"", text))
            assert labels <= {"destination", "le"}
            assert "198.51.100" not in text and "web-01" not in text

            status, ctype, text = get(f"{base}/health")
            doc = json.loads(text)
            assert (status, ctype) == (200, "application/json")
            assert doc["status"] == "degraded"
            hook = doc["destinations"]["hook"]
            assert hook["alive"] is True
            assert hook["pending"] == 4
            assert "HTTP 500" in hook["last_error"]
            assert endpoint.url not in text

            endpoint.default = Answer(200)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                values = samples(get(f"{base}/metrics")[2])
                if values['alert_service_notifications_sent_total{destination="hook"}'] == 4:
                    break
                time.sleep(0.05)
            assert values['alert_service_notifications_sent_total{destination="hook"}'] == 4
            assert values['alert_service_outbox_pending{destination="hook"}'] == 0
            assert (
                values['alert_service_outbox_oldest_pending_age_seconds{destination="hook"}'] == 0
            )
            assert json.loads(get(f"{base}/health")[2])["status"] == "ok"
            assert get(f"{base}/nope")[0] == 404
        finally:
            service.stop()
            ops.stop()
            notifier.close()
        # Workers stopped: /health would now say failing.
        healthy, doc = service.health()
        assert not healthy
        assert doc["status"] == "failing"
    conn.close()


def test_metrics_section_is_optional_with_defaults() -> None:
    base = {
        "sources": [{"path": "/x"}],
        "notifiers": [{"name": "h", "type": "webhook", "url": "http://127.0.0.1:1/"}],
        "rules": [{"name": "r", "notify": ["h"]}],
    }
    assert build_config(base, "c", environ={}).metrics is None
    on = build_config({**base, "metrics": {}}, "c", environ={}).metrics
    assert on == MetricsConfig("127.0.0.1", 9464)
    custom = build_config(
        {**base, "metrics": {"listen_address": "::1", "port": 0}}, "c", environ={}
    ).metrics
    assert custom == MetricsConfig("::1", 0)


def test_ops_server_on_ipv6_loopback() -> None:
    metrics = ServiceMetrics(Stats(lines_read=1))
    ops = OpsServer(MetricsConfig("::1", 0), metrics.registry, lambda: (True, {"status": "ok"}))
    try:
        port = ops.start()
    except OSError:  # no IPv6 on this host
        return
    try:
        assert get(f"http://[::1]:{port}/health")[0] == 200
        assert "alert_service_lines_read_total 1.0" in get(f"http://[::1]:{port}/metrics")[2]
    finally:
        ops.stop()
