"""Every notifier keeps its destination's documented limits, whatever the alert holds.

A real HTTP server on 127.0.0.1 plays the four destinations and enforces their limits
the way the services do (Slack answers 400 ``invalid_blocks``, Teams 413, PagerDuty
400, a webhook receiver 413). Hostile alerts — a command line padded with 700 ``&``
(each five characters once escaped for Slack), a 130,000-character name of control
characters, a 1.3 MB name — go through the real outbox and a delivery worker; each
must arrive, cut with a visible marker, and nothing may be dead-lettered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from deliver_support import FakeClock, make_alert

from alert_service.deliver import DestinationSettings, DestinationWorker
from alert_service.deliver.retry import RetryPolicy
from alert_service.match import Alert
from alert_service.notify import (
    Notifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
)
from alert_service.notify.literal import units
from alert_service.ops import ServiceMetrics
from alert_service.secret import Secret
from alert_service.state import enqueue_alerts, open_state
from alert_service.state.outbox import queue_depths, transaction

WEBHOOK_MAX_BODY = 64 * 1024


def _slack_problems(doc: Any) -> list[str]:
    """Slack's Block Kit limits (Block Kit reference: section, context, blocks)."""
    problems = []
    if units(doc.get("text", "")) > 40_000:
        problems.append("text too long")
    blocks = doc.get("blocks", [])
    if len(blocks) > 50:
        problems.append("more than 50 blocks")
    for block in blocks:
        text = block.get("text", {}).get("text", "")
        if units(text) > 3000:
            problems.append(f"section text of {units(text)} characters")
        fields = block.get("fields", [])
        if len(fields) > 10:
            problems.append("more than 10 fields")
        problems += [f"field of {units(f['text'])}" for f in fields if units(f["text"]) > 2000]
        if len(block.get("elements", [])) > 10:
            problems.append("more than 10 context elements")
    return problems


def _pagerduty_problems(doc: Any) -> list[str]:
    problems = []
    if len(doc.get("dedup_key", "")) > 255:
        problems.append("dedup_key longer than 255")
    if len(doc["payload"]["summary"]) > 1024:
        problems.append("summary longer than 1024")
    if doc.get("routing_key") != "R0UTINGKEY":
        problems.append("no routing key")
    return problems


@dataclass
class Destination:
    """What one path enforces: a body limit in bytes, and structural checks."""

    max_bytes: int
    too_large_status: int
    check: Callable[[Any], list[str]] = lambda doc: []


DESTINATIONS = {
    # Slack documents no body-size limit for webhooks; its block limits are checked.
    "/slack": Destination(10 * 1024 * 1024, 400, _slack_problems),
    "/teams": Destination(28_000, 413),
    "/pagerduty": Destination(512 * 1024, 400, _pagerduty_problems),
    "/webhook": Destination(WEBHOOK_MAX_BODY, 413),
}


@dataclass
class Receiver:
    url: str = ""
    accepted: dict[str, list[Any]] = field(default_factory=dict)
    refused: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            dest = DESTINATIONS[self.path]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            problems = []
            if length > dest.max_bytes:
                problems.append(f"body of {length} bytes")
            else:
                problems += dest.check(json.loads(body))
            with state.lock:
                if problems:
                    state.refused.append((self.path, "; ".join(problems)))
                else:
                    state.accepted.setdefault(self.path, []).append(json.loads(body))
            if problems:
                status, answer = dest.too_large_status, b"invalid_blocks"
            else:
                status, answer = (200, b"ok") if self.path == "/slack" else (202, b"")
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

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


def _notifiers(url: str) -> dict[str, Notifier]:
    return {
        "/slack": SlackNotifier.from_config("dest", {"url": Secret(f"{url}/slack", "env:S")}),
        "/teams": TeamsNotifier.from_config("dest", {"url": Secret(f"{url}/teams", "env:T")}),
        "/pagerduty": PagerDutyNotifier.from_config(
            "dest", {"routing_key": Secret("R0UTINGKEY", "env:P"), "url": f"{url}/pagerduty"}
        ),
        "/webhook": WebhookNotifier.from_config(
            "dest", {"url": f"{url}/webhook", "max_body_bytes": WEBHOOK_MAX_BODY}
        ),
    }


HOSTILE: dict[str, dict[str, Any]] = {
    # The case: argv padded with 700 '&' pushes Slack's section past 3000.
    "ampersands": {"cmdline": "curl http://198.51.100.7/x " + "&" * 700},
    # Each byte of a 130,000-byte argv[0] of control characters escaped to 4 by osquery.
    "control-name": {"name": "\\x01" * 130_000, "cmdline": "\x01" * 130_000},
    # A 1.3 MB name and path, and a long user.
    "huge-name": {"name": "n" * 1_300_000, "path": "/" + "p" * 600_000, "username": "u" * 5000},
    # Markup in every field, long enough that escaping multiplies it.
    "markup": {
        "name": "*_~`<>&" * 3000,
        "cmdline": "[Verify](https://evil.example/login) <!channel> " * 2000,
    },
    "markup-host": {"host": "<@U123>" * 500, "decorations": {"hostname": "[x](https://e.x)" * 9}},
}


@pytest.mark.parametrize("path", sorted(DESTINATIONS))
def test_hostile_alerts_arrive_within_the_destinations_limits(
    receiver: Receiver, tmp_path: Path, path: str
) -> None:
    notifier = _notifiers(receiver.url)[path]
    db = str(tmp_path / "state.sqlite3")
    conn = open_state(db)
    clock = FakeClock()
    worker = DestinationWorker(
        notifier,
        db,
        RetryPolicy(max_attempts=1),
        DestinationSettings(),
        metrics=ServiceMetrics(),
        clock=clock,
    )
    alerts: list[Alert] = []
    for case, columns in HOSTILE.items():
        alerts.append(make_alert(rule=f"r-{case}", notify=("dest",), **columns))
    with transaction(conn):
        enqueue_alerts(conn, alerts, clock.time())
    for _ in range(20):
        if not queue_depths(conn):
            break
        clock.advance(worker.step(conn))
    states = dict(conn.execute("SELECT rule, state FROM outbox").fetchall())
    conn.close()
    notifier.close()
    assert receiver.refused == []
    assert states == {f"r-{case}": "sent" for case in HOSTILE}
    got = receiver.accepted[path]
    assert len(got) == len(HOSTILE)
    # Every alert too large for the destination shows that it was cut.
    for doc in got:
        text = json.dumps(doc, ensure_ascii=False)
        uncut = {
            "/slack": set(),
            "/teams": {"r-ampersands"},
            "/pagerduty": {"r-ampersands"},
            "/webhook": {"r-ampersands", "r-markup-host"},
        }[path]
        rule = next(r for r in sorted(states, key=len, reverse=True) if r in text)
        assert ("chars]" in text) == (rule not in uncut), (path, rule)


def test_slack_section_limit_holds_after_escaping() -> None:
    """700 '&' fit under 300 characters before escaping, 3500 after: cut after escaping."""
    slack = _notifiers("http://127.0.0.1:9")["/slack"]
    payload = slack.render(make_alert(cmdline="&" * 2990, name="&" * 1000))
    assert _slack_problems(payload) == []
    (cmd,) = [b for b in payload["blocks"] if "Command line" in b.get("text", {}).get("text", "")]
    text = cmd["text"]["text"]
    assert text.endswith(" chars]```")
    # Never cut inside an entity.
    body = text.removeprefix("*Command line*\n```").split("…[cut")[0]
    assert body == "&amp;" * (len(body) // 5)


def test_webhook_body_cap_is_configurable_and_keeps_short_values_exact() -> None:
    hook = _notifiers("http://127.0.0.1:9")["/webhook"]
    alert = make_alert(cmdline="c" * 200_000, path="/usr/bin/nc")
    payload = hook.render(alert)
    assert len(json.dumps(payload).encode()) <= WEBHOOK_MAX_BODY
    assert payload["connection"]["path"] == "/usr/bin/nc"
    assert payload["connection"]["cmdline"].startswith("c" * 1000)
    assert payload["connection"]["cmdline"].endswith(" chars]")
    small = make_alert()
    assert hook.render(small) == small.as_dict()


def test_digests_stay_within_limits(receiver: Receiver) -> None:
    alerts = [
        make_alert(rule=f"rule-{i}" + "&" * 200, counter=i, cmdline="&" * 5000, name="*" * 3000)
        for i in range(40)
    ]
    for path, notifier in _notifiers(receiver.url).items():
        body = notifier.render_digest(alerts)
        if body is None:
            continue
        notifier.send(body, idempotency_key="digest")
        notifier.close()
        assert receiver.refused == [], path
