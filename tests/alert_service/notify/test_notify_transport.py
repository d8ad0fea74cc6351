"""Notifier transports against a real scripted HTTP endpoint; signing; secret config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from alerts_support import REPO_ROOT
from deliver_support import HANG, Answer, ScriptedEndpoint, make_alert, serve_endpoint

from alert_service.config import build_config
from alert_service.errors import ConfigError, NotifyError
from alert_service.notify import (
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
)
from alert_service.notify.http import HttpTransport
from alert_service.notify.webhook import WebhookSettings, decode_signing_secret, sign
from alert_service.secret import Secret

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with serve_endpoint() as state:
        yield state


def test_standard_webhooks_known_vector() -> None:
    # Vector of the Standard Webhooks reference library's test_sign_function.
    key = decode_signing_secret(SECRET)
    body = b'{"test": 2432232314}'
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    assert decode_signing_secret(SECRET.removeprefix("whsec_")) == key
    with pytest.raises(ValueError, match="base64") as info:
        decode_signing_secret("whsec_not*base64")
    assert "not*base64" not in str(info.value)


def test_signed_webhook_is_verifiable_by_the_receiver(endpoint: ScriptedEndpoint) -> None:
    notifier = WebhookNotifier.from_config(
        "hook",
        {"url": endpoint.url, "signing_secret": Secret(SECRET, "env:S"), "headers": {"X-A": "b"}},
    )
    notifier._clock = lambda: 1_756_800_000.9
    alert = make_alert(cmdline="ünï <b> 🐍")
    try:
        notifier.send(notifier.render(alert), idempotency_key=alert.id)
        notifier.send(notifier.render(alert), idempotency_key=alert.id)
    finally:
        notifier.close()
    first, second = endpoint.requests
    for got in (first, second):
        assert got.headers["webhook-id"] == alert.id
        assert got.headers["webhook-timestamp"] == "1756800000"
        assert got.headers["Content-Type"] == "application/json; charset=utf-8"
        assert got.headers["X-A"] == "b"
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        signed = f"{alert.id}.1756800000.".encode() + got.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert got.headers["webhook-signature"] == f"v1,{expected}"
        assert got.json() == alert.as_dict()
        assert "🐍".encode() in got.body
    assert first.body == second.body


def test_unsigned_webhook_has_no_signature(endpoint: ScriptedEndpoint) -> None:
    notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
    alert = make_alert()
    try:
        notifier.send(notifier.render(alert), idempotency_key=alert.id)
    finally:
        notifier.close()
    (got,) = endpoint.requests
    assert "webhook-signature" not in got.headers
    assert got.headers["webhook-timestamp"].isdigit()


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_2xx_is_success(endpoint: ScriptedEndpoint, status: int) -> None:
    endpoint.answer(Answer(status, body=b"" if status == 204 else b"accepted"))
    notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
    try:
        notifier.notify(make_alert())
    finally:
        notifier.close()
    assert [r.status for r in endpoint.requests] == [status]


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after"),
    [
        (Answer(400, body=b"bad"), False, None),
        (Answer(404), False, None),
        (Answer(410, body=b"gone"), False, None),
        (Answer(429, {"Retry-After": "7"}), True, 7.0),
        (Answer(503, {"Retry-After": "120"}), True, 120.0),
        (Answer(500), True, None),
    ],
)
def test_error_statuses(
    endpoint: ScriptedEndpoint, answer: Answer, retryable: bool, retry_after: float | None
) -> None:
    endpoint.answer(answer)
    notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url})
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert info.value.retryable is retryable
    assert info.value.retry_after_secs == retry_after
    assert f"HTTP {answer.status}" in str(info.value)
    assert endpoint.url not in str(info.value)


def test_hanging_endpoint_times_out(endpoint: ScriptedEndpoint) -> None:
    endpoint.answer(HANG)
    notifier = WebhookNotifier.from_config("hook", {"url": endpoint.url, "timeout_secs": 0.2})
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
        endpoint.release.set()
    assert info.value.retryable is True
    assert info.value.error_type == "timeout"


def slack(url: str) -> SlackNotifier:
    return SlackNotifier.from_config("slack", {"url": Secret(url, "env:SLACK")})


def test_slack_ok_body_is_success_and_other_200_body_is_a_dead_error(
    endpoint: ScriptedEndpoint,
) -> None:
    endpoint.answer(Answer(200, body=b"ok"), Answer(200, body=b"invalid_blocks"))
    notifier = slack(endpoint.url)
    alert = make_alert(name="<!here>")
    try:
        notifier.notify(alert)
        with pytest.raises(NotifyError) as info:
            notifier.notify(alert)
    finally:
        notifier.close()
    assert info.value.retryable is False
    assert info.value.error_type == "response_body"
    assert "invalid_blocks" in str(info.value)
    body = endpoint.requests[0].json()
    assert set(body) == {"text", "blocks", "unfurl_links", "unfurl_media"}
    assert "&lt;!here&gt;" in body["text"]
    assert "webhook-id" not in endpoint.requests[0].headers


def test_slack_429_with_retry_after(endpoint: ScriptedEndpoint) -> None:
    endpoint.answer(Answer(429, {"Retry-After": "30"}, b"rate_limited"))
    notifier = slack(endpoint.url)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert (info.value.retryable, info.value.retry_after_secs) == (True, 30.0)


def test_teams_workflow_202(endpoint: ScriptedEndpoint) -> None:
    endpoint.answer(Answer(202, body=b""))
    notifier = TeamsNotifier.from_config("teams", {"url": Secret(endpoint.url, "env:T")})
    try:
        notifier.notify(make_alert())
    finally:
        notifier.close()
    (got,) = endpoint.requests
    body = got.json()
    assert body["type"] == "message"
    assert body["attachments"][0]["content"]["type"] == "AdaptiveCard"
    assert got.headers["Content-Type"] == "application/json; charset=utf-8"


def test_pagerduty_adds_the_routing_key_and_keeps_the_dedup_key(
    endpoint: ScriptedEndpoint,
) -> None:
    endpoint.answer(
        Answer(202, body=b'{"status":"success","dedup_key":"x"}'),
        Answer(400, body=b'{"status":"invalid event"}'),
    )
    notifier = PagerDutyNotifier.from_config(
        "pd", {"routing_key": Secret("R0UTING", "file:/k"), "url": endpoint.url}
    )
    alert = make_alert()
    try:
        notifier.notify(alert)
        with pytest.raises(NotifyError) as info:
            notifier.notify(alert)
    finally:
        notifier.close()
    assert info.value.retryable is False
    first, second = (r.json() for r in endpoint.requests)
    assert first["routing_key"] == "R0UTING"
    assert (
        first["dedup_key"] == second["dedup_key"] == f"tracked-connections/reverse-shell/{alert.id}"
    )
    assert first["payload"]["source"] == "web-01.example.com"  # the hostname decoration


# -- configuration of notifiers and secrets ---------------------------------------


def config_doc(*notifiers: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
        "notifiers": list(notifiers),
        "rules": [{"name": "r", "notify": [n["name"] for n in notifiers], "remote_port": [22]}],
    }


def problems(doc: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(doc, "c.yaml", environ=env or {})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_secret_fields_refuse_inline_values_without_echoing_them() -> None:
    doc = config_doc(
        {"name": "s", "type": "slack", "url": "https://hooks.slack.example/T0/B0/SEKRIT"},
        {"name": "p", "type": "pagerduty", "routing_key": "SEKRITKEY"},
        {"name": "w", "type": "webhook", "url": "http://x/", "signing_secret": "whsec_SEKRIT"},
        {"name": "t", "type": "teams", "url": "https://flow.example/SEKRIT"},
    )
    found = problems(doc)
    refused = "a secret must come from {env: NAME} or {file: /path}; inline text is refused"
    assert found == [
        f"$.notifiers[0].url: {refused}",
        f"$.notifiers[1].routing_key: {refused}",
        f"$.notifiers[2].signing_secret: {refused}",
        f"$.notifiers[3].url: {refused}",
    ]
    assert "SEKRIT" not in "\n".join(found)


def test_secrets_from_env_and_files(tmp_path: Path) -> None:
    key_file = tmp_path / "pd.key"
    key_file.write_text("FILEKEY\n", encoding="utf-8")
    doc = config_doc(
        {"name": "s", "type": "slack", "url": {"env": "SLACK_URL"}},
        {"name": "p", "type": "pagerduty", "routing_key": {"file": str(key_file)}},
        {
            "name": "w",
            "type": "webhook",
            "url": {"file": str(key_file)},
            "signing_secret": {"env": "HOOK_SECRET"},
        },
    )
    config = build_config(
        doc, "c.yaml", environ={"SLACK_URL": "https://hooks.example/x", "HOOK_SECRET": SECRET}
    )
    slack_opts, pd_opts, hook_opts = (n.options for n in config.notifiers)
    assert slack_opts["url"] == Secret("https://hooks.example/x", "env:SLACK_URL")
    assert pd_opts["routing_key"] == Secret("FILEKEY", f"file:{key_file}")
    assert str(pd_opts["routing_key"]) == f"Secret(file:{key_file})"
    assert hook_opts["signing_secret"].reveal() == SECRET


def test_secret_problems_are_all_listed(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    doc = config_doc(
        {"name": "s", "type": "slack", "url": {"file": str(tmp_path / "absent")}},
        {"name": "p", "type": "pagerduty", "routing_key": {"file": str(empty)}},
        {"name": "w", "type": "webhook", "url": "http://x/", "signing_secret": {"env": "BAD"}},
        {"name": "t", "type": "teams", "url": {"env": "x", "file": "/y"}},
        {"name": "u", "type": "teams", "url": {"file": "relative/path"}},
    )
    found = problems(doc, {"BAD": "whsec_***notbase64***"})
    assert found[0] == (
        f"$.notifiers[0].url: cannot read secret file {tmp_path / 'absent'}: "
        "No such file or directory"
    )
    assert found[1] == f"$.notifiers[1].routing_key: secret file {empty} is empty"
    assert found[2] == (
        "$.notifiers[2].signing_secret: signing secret is not whsec_ followed by base64 (env:BAD)"
    )
    assert found[3].startswith("$.notifiers[3].url: ")
    assert found[4] == "$.notifiers[4].url.file: 'relative/path' does not match '^/'"
    assert len(found) == 5
    assert "notbase64" not in "\n".join(found)


def test_delivery_options_are_accepted_for_every_type_and_checked() -> None:
    doc = config_doc(
        {
            "name": "s",
            "type": "slack",
            "url": {"env": "U"},
            "rate_limit_per_minute": 30,
            "rate_limit_burst": 2,
            "digest_threshold": 5,
            "digest_max_alerts": 50,
        },
        {"name": "p", "type": "pagerduty", "routing_key": {"env": "U"}, "digest_threshold": 5},
        {"name": "w", "type": "webhook", "url": "http://x/", "rate_limit_per_minute": -1},
        {"name": "t", "type": "teams", "url": {"env": "U"}, "envelope": "bare", "bogus": 1},
    )
    assert problems(doc, {"U": "https://x.example/"}) == [
        "$.notifiers[1].digest_threshold: notifier type 'pagerduty' does not send digests",
        "$.notifiers[2].rate_limit_per_minute: -1 is less than the minimum of 0",
        "$.notifiers[3]: unknown key bogus",
        "$.notifiers[3].envelope: 'bare' is not one of ['message', 'card']",
    ]


def test_notifier_defaults_for_delivery() -> None:
    classes: list[type[Notifier]] = [SlackNotifier, TeamsNotifier, PagerDutyNotifier]
    assert [c.default_rate_limit_per_minute for c in classes] == [60.0, 60.0, 120.0]
    assert WebhookNotifier.default_rate_limit_per_minute is None
    assert [c.supports_digest() for c in classes] == [True, True, False]
    assert WebhookNotifier.supports_digest()


def test_secret_values_never_reach_reprs_or_json() -> None:
    notifier = slack("https://hooks.slack.example/T/B/SEKRIT")
    assert "SEKRIT" not in repr(notifier.settings)
    assert "SEKRIT" not in json.dumps(notifier.render(make_alert()))
    notifier.close()


# -- transport failures: the reason is named; after the request is sent, always retried --


@contextmanager
def raw_reply(reply: bytes) -> Iterator[str]:
    """A real TCP server on 127.0.0.1 that reads one request and answers ``reply`` as is
    (a broken reply no http.server handler would write), then closes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            found = re.search(rb"(?i)content-length: *(\d+)", head)
            length = int(found.group(1)) if found else 0
            while len(body) < length:
                body += conn.recv(65536)
            conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        server.close()
        thread.join(5)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send_error(url: str, session: requests.Session | None = None, **options: Any) -> NotifyError:
    notifier = WebhookNotifier("hook", WebhookSettings(url=url, **options))
    if session is not None:
        notifier.transport = HttpTransport("hook", session)
    try:
        with pytest.raises(NotifyError) as info:
            notifier.notify(make_alert())
    finally:
        notifier.close()
    assert url not in str(info.value)
    return info.value


def test_connection_refused_names_the_errno() -> None:
    err = send_error(f"http://127.0.0.1:{free_port()}/hook")
    assert str(err) == "hook: connection failed: ECONNREFUSED (Connection refused)"
    assert (err.retryable, err.error_type) == (True, "connection")


def test_unreachable_proxy_is_a_proxy_error() -> None:
    session = requests.Session()
    session.proxies = {"http": f"http://127.0.0.1:{free_port()}"}
    err = send_error("http://192.0.2.10/hook", session)
    assert str(err) == "hook: proxy failed: ECONNREFUSED (Connection refused)"
    assert (err.retryable, err.error_type) == (True, "proxy")


def test_tls_to_a_plain_http_server_is_a_tls_error(endpoint: ScriptedEndpoint) -> None:
    err = send_error(endpoint.url.replace("http://", "https://"))
    assert str(err).startswith("hook: TLS failed: ")
    assert (err.retryable, err.error_type) == (True, "tls")


DNS_SCRIPT = """
import json
from alert_service.errors import NotifyError
from alert_service.notify.http import HttpTransport
try:
    HttpTransport("hook").post("http://alerts.example.com/hook", b"{}", headers={},
                               connect_timeout_secs=5, read_timeout_secs=5)
except NotifyError as err:
    print(json.dumps([str(err), err.error_type, err.retryable]))
"""


def test_name_resolution_failure_is_named() -> None:
    # In an empty network namespace the resolver cannot reach any server: a real
    # getaddrinfo failure (EAI_AGAIN) without any packet leaving this host.
    try:
        done = subprocess.run(
            ["unshare", "-rn", sys.executable, "-c", DNS_SCRIPT],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if done.returncode != 0 and "unshare" in done.stderr:
        pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
    message, error_type, retryable = json.loads(done.stdout)
    assert message == (
        "hook: connection failed: name resolution failed "
        "(EAI_AGAIN: Temporary failure in name resolution)"
    )
    assert (error_type, retryable) == ("dns", True)


@pytest.mark.parametrize(
    ("reply", "what"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly five",
            "ChunkedEncodingError",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!",
            "ContentDecodingError",
        ),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 50\r\n\r\ncut short", "ChunkedEncodingError"),
    ],
)
def test_a_reply_broken_after_the_request_was_sent_is_retryable(reply: bytes, what: str) -> None:
    with raw_reply(reply) as url:
        err = send_error(url)
    assert str(err).startswith(f"hook: reply unreadable ({what}")
    assert (err.retryable, err.error_type) == (True, "transport")


def test_a_request_that_cannot_be_made_is_not_retried_and_hides_the_value(
    endpoint: ScriptedEndpoint,
) -> None:
    err = send_error(endpoint.url, headers={"X-Token": Secret("se\ncret", "env:T")})
    assert str(err) == "hook: request cannot be made (InvalidHeader)"
    assert (err.retryable, err.error_type) == (False, "request")
    assert endpoint.requests == []
