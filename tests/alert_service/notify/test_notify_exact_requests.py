"""Requests carry exactly what the config says, whatever the environment holds.

A real ``~/.netrc`` (in a temporary ``HOME``) names the receiver with other
credentials, and ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` point at a real proxy on
127.0.0.1 that records what reaches it. The receiver must get the configured
``Authorization`` header and nothing may go through the proxy, unless the notifier's
own ``proxy_url`` says so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from deliver_support import make_alert

from alert_service.config import load_config
from alert_service.notify import DEFAULT_REGISTRY, PagerDutyNotifier, SlackNotifier, WebhookNotifier
from alert_service.notify.base import Notifier
from alert_service.notify.fleet import FleetClient, FleetSettings
from alert_service.secret import Secret


@dataclass
class Recorder:
    """A real HTTP server recording (request target, headers); answers 200 ``ok``."""

    url: str = ""
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def serve() -> Iterator[Recorder]:
    state = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            self.rfile.read(length)
            with state.lock:
                state.seen.append((self.path, dict(self.headers.items())))
            body = b'{"host": {"id": 1}}' if self.command == "GET" else b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self._answer()

        def do_GET(self) -> None:
            self._answer()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def hostile_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A HOME with a .netrc for 127.0.0.1 and every proxy variable set to a recorder."""
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password stolen\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("NETRC", raising=False)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    with serve() as proxy:
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url)
        yield proxy


def _notifiers(url: str) -> list[Notifier]:
    return [
        WebhookNotifier.from_config(
            "hook",
            {"url": f"{url}/hook", "headers": {"Authorization": Secret("Bearer cfg", "env:A")}},
        ),
        SlackNotifier.from_config("slack", {"url": Secret(f"{url}/slack", "env:S")}),
        PagerDutyNotifier.from_config(
            "pd", {"routing_key": Secret("R0UTINGKEY", "env:P"), "url": f"{url}/pd"}
        ),
    ]


def test_netrc_and_proxy_variables_are_not_used(hostile_env: Recorder) -> None:
    with serve() as receiver:
        for notifier in _notifiers(receiver.url):
            notifier.notify(make_alert())
            notifier.close()
        client = FleetClient(
            "fleet", FleetSettings(url=receiver.url, api_token=Secret("fleet-tok", "env:F"))
        )
        client.request("GET", "/api/v1/fleet/hosts/identifier/web-01", what="host lookup")
        client.close()
        seen = list(receiver.seen)
    assert hostile_env.seen == []  # nothing went through the environment's proxy
    assert [path for path, _ in seen] == [
        "/hook",
        "/slack",
        "/pd",
        "/api/v1/fleet/hosts/identifier/web-01",
    ]
    auth = [headers.get("Authorization") for _, headers in seen]
    # The configured header, else none at all: never the .netrc's Basic credentials.
    assert auth == ["Bearer cfg", None, None, "Bearer fleet-tok"]


def test_proxy_url_option_is_used(hostile_env: Recorder) -> None:
    with serve() as proxy, serve() as receiver:
        hook = WebhookNotifier.from_config(
            "hook", {"url": f"{receiver.url}/hook", "proxy_url": proxy.url}
        )
        hook.notify(make_alert())
        hook.close()
        via_proxy = list(proxy.seen)
        direct = list(receiver.seen)
    assert hostile_env.seen == []
    assert direct == []
    # A forward proxy gets the absolute URL.
    assert [target for target, _ in via_proxy] == [f"{receiver.url}/hook"]
    assert "Authorization" not in via_proxy[0][1]


def test_proxy_url_and_ca_file_are_config_options(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a TLS request\n", encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
sources: [{{path: {tmp_path / "results.log"}}}]
notifiers:
  - name: hook
    type: webhook
    url: https://siem.example/hook
    proxy_url: http://proxy.example:3128
    ca_file: {ca}
    total_timeout_secs: 20
rules:
  - name: any
    notify: [hook]
""",
        encoding="utf-8",
    )
    loaded = load_config(str(config))
    (entry,) = loaded.notifiers
    hook = DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options)
    assert isinstance(hook, WebhookNotifier)
    session = hook.transport.session
    assert session.trust_env is False
    assert session.proxies == {
        "http": "http://proxy.example:3128",
        "https": "http://proxy.example:3128",
    }
    assert session.verify == str(ca)
    assert hook.transport.total_timeout_secs == 20
    hook.close()


def test_netrc_alone_does_not_replace_the_configured_header(
    hostile_env: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name)
    with serve() as receiver:
        hook, slack, _ = _notifiers(receiver.url)
        hook.notify(make_alert())
        slack.notify(make_alert())
        hook.close()
        slack.close()
        auth = [headers.get("Authorization") for _, headers in receiver.seen]
    assert auth == ["Bearer cfg", None]
