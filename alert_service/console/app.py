"""The web console: server-rendered pages under ``/console/`` on the ops port.

Pages (GET): ``/console/`` status; ``/console/alerts`` outbox rows filtered by rule,
host, notifier, state and time; ``/console/alerts/<id>`` one row with its rendered
payload; ``/console/dead`` dead letters with retry; ``/console/silences`` silences
with a form to add one. Actions (POST, CSRF-checked, then ``303 See Other``):
``/console/retry``, ``/console/silences`` (add), ``/console/silences/<id>/expire``,
``/console/login``.

HTML comes from Jinja2 templates (https://jinja.palletsprojects.com/en/3.1.x/api/
"Autoescaping") with autoescaping on for every value: connection data (command
lines, paths, user names, host names) is attacker-controlled. Every reply carries a
Content-Security-Policy that allows no script at all, so even a value that slipped
through could not run.

The console reads and writes the state as ``status`` and ``outbox`` do
(:mod:`alert_service.state.inspect`, :mod:`alert_service.state.silences`), each
request on its own short connection.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader

from alert_service.config import Config
from alert_service.console.security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Guard,
    cookie_header,
    read_cookies,
)
from alert_service.logs import log_event
from alert_service.operate.commands import safe_text
from alert_service.operate.timespec import format_time, parse_duration, parse_time
from alert_service.operate.views import entry_doc, run_text, state_target, status_doc
from alert_service.secret import reveal
from alert_service.state.db import StateConnection, open_state_reader, open_state_writer
from alert_service.state.inspect import OUTBOX_STATES, get_entry, list_entries, retry_rows
from alert_service.state.silences import add_silence, expire_silence, list_silences

__all__ = ["PREFIX", "ConsoleApp", "Request", "Response"]

_log = logging.getLogger(__name__)

PREFIX = "/console"
"""Path prefix of every console URL."""

MAX_BODY_BYTES = 64 * 1024
"""Largest form body accepted, bytes."""

_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),  # no-referrer makes browsers send Origin: null
    ("Cache-Control", "no-store"),
)

_CSS = b"""body{font-family:sans-serif;margin:1em 2em;color:#222}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all}
.done{background:#e8f5e9;padding:.4em}.error{background:#fdecea;padding:.4em}
form.inline{display:inline}label{display:block;margin:.3em 0}
"""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request for the console.

    Attributes:
        method: ``GET`` or ``POST``.
        path: the path without the query (``/console/alerts``).
        query: the query string (without ``?``).
        headers: header name in lower case → value.
        body: the request body (POST), at most :data:`MAX_BODY_BYTES`.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    """Status, headers and body of a reply."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _first(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


def _opt(form: Mapping[str, list[str]], name: str) -> str | None:
    return _first(form, name) or None


class ConsoleApp:
    """Answer console requests for one configuration.

    Args:
        config: the running configuration (:attr:`config` is replaced on reload).
        clock: wall time, Unix seconds.
    """

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        console = config.console
        token = None if console is None or console.token is None else reveal(console.token)
        self.guard = Guard(token)
        self.env = Environment(
            loader=PackageLoader("alert_service.console", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            # Every value shown: control and bidi characters (U+202E reverses how a
            # name reads) written as \uNNNN, after which autoescape makes it HTML-safe.
            finalize=lambda v: safe_text(v) if isinstance(v, str) else v,
        )
        self.env.filters["time"] = format_time
        self.env.filters["pretty"] = lambda v: safe_text(
            json.dumps(v, indent=2, ensure_ascii=False)
        )

    # -- plumbing -----------------------------------------------------------------

    prefix = PREFIX
    """Where the ops server mounts the console (:class:`~alert_service.ops.server.MountedApp`)."""

    def serve(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """The :class:`~alert_service.ops.server.MountedApp` entry: :meth:`handle`."""
        response = self.handle(Request(method, path, query, headers, body))
        return response.status, response.headers, response.body

    def handle(self, request: Request) -> Response:
        """Answer ``request`` (any path under :data:`PREFIX`)."""
        try:
            return self._route(request)
        except (sqlite3.Error, OSError) as err:
            log_event(_log, logging.ERROR, "console_state_error", reason=str(err))
            return self._page(request, "error.html", {"message": str(err)}, status=503)

    def _route(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        sub = path[len(PREFIX) :] or "/"
        cookies = read_cookies(request.headers.get("cookie", ""))
        if sub == "/style.css":
            return Response(200, [("Content-Type", "text/css"), *_HEADERS], _CSS)
        if sub == "/login":
            return self._login(request, cookies)
        if not self.guard.authenticated(request.headers, cookies):
            if request.method == "GET":
                return self._redirect(f"{PREFIX}/login")
            return self._text(401, "login required\n")
        if request.method == "POST":
            form = self._form(request)
            if form is None:
                return self._text(400, "not a form\n")
            origin_ok = self.guard.origin_ok(request.headers)
            token_ok = self.guard.csrf_ok(cookies.get(CSRF_COOKIE, ""), _first(form, "csrf"))
            if not (origin_ok and token_ok):
                log_event(
                    _log,
                    logging.WARNING,
                    "console_csrf_refused",
                    path=request.path,
                    reason="foreign Origin" if not origin_ok else "missing or wrong CSRF token",
                )
                return self._text(403, "refused: missing or wrong CSRF token; reload the page\n")
            return self._post(request, sub, form)
        if request.method != "GET":
            return self._text(405, "method not allowed\n")
        return self._get(request, sub)

    def _form(self, request: Request) -> dict[str, list[str]] | None:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return None
        return parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)

    def _text(self, status: int, text: str) -> Response:
        return Response(
            status, [("Content-Type", "text/plain; charset=utf-8"), *_HEADERS], text.encode()
        )

    def _redirect(self, location: str) -> Response:
        return Response(303, [("Location", location), *_HEADERS], b"")

    def _page(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        cookies = read_cookies(request.headers.get("cookie", ""))
        csrf_cookie = cookies.get(CSRF_COOKIE, "")
        headers = [("Content-Type", "text/html; charset=utf-8"), *_HEADERS]
        if not re.fullmatch(r"[0-9a-f]{32}", csrf_cookie):
            csrf_cookie = self.guard.new_csrf_cookie()
            headers.append(("Set-Cookie", cookie_header(CSRF_COOKIE, csrf_cookie, PREFIX)))
        query = parse_qs(request.query)
        body = self.env.get_template(template).render(
            prefix=PREFIX,
            csrf=self.guard.csrf_field(csrf_cookie),
            done=_first(query, "done"),
            error=_first(query, "error"),
            login=self.guard.token is not None,
            **context,
        )
        return Response(status, headers, body.encode("utf-8"))

    def _read(self) -> StateConnection:
        return open_state_reader(state_target(self.config))

    def _write(self) -> StateConnection:
        return open_state_writer(state_target(self.config))

    # -- pages ----------------------------------------------------------------------

    def _get(self, request: Request, sub: str) -> Response:
        now = self.clock()
        query = parse_qs(request.query)
        if sub == "/":
            conn = self._read()
            try:
                doc = status_doc(self.config, conn, now)
            finally:
                conn.close()
            return self._page(
                request,
                "status.html",
                {"status": doc, "run": run_text(doc), "states": OUTBOX_STATES},
            )
        if sub in ("/alerts", "/dead"):
            filters = {
                name: _first(query, name) for name in ("rule", "host", "notifier", "state", "since")
            }
            if sub == "/dead":
                filters["state"] = "dead"
            try:
                since = parse_time(filters["since"], now) if filters["since"] else None
            except ValueError as err:
                return self._page(request, "error.html", {"message": str(err)}, status=400)
            conn = self._read()
            try:
                entries = list_entries(
                    conn,
                    state=filters["state"] if filters["state"] in OUTBOX_STATES else None,
                    rule=filters["rule"] or None,
                    destination=filters["notifier"] or None,
                    host=filters["host"] or None,
                    since=since,
                    limit=200,
                )
            finally:
                conn.close()
            template = "dead.html" if sub == "/dead" else "alerts.html"
            context = {"entries": entries, "filters": filters, "states": OUTBOX_STATES}
            return self._page(request, template, context)
        match = re.fullmatch(r"/alerts/(\d{1,18})", sub)
        if match:
            conn = self._read()
            try:
                entry = get_entry(conn, int(match.group(1)))
            finally:
                conn.close()
            if entry is None:
                return self._page(request, "error.html", {"message": "no such row"}, status=404)
            return self._page(request, "alert.html", {"doc": entry_doc(self.config, entry)})
        if sub == "/silences":
            conn = self._read()
            try:
                found = list_silences(conn, now, all=True)
            finally:
                conn.close()
            return self._page(request, "silences.html", {"silences": found, "now": now})
        return self._page(request, "error.html", {"message": "no such page"}, status=404)

    # -- actions --------------------------------------------------------------------

    def _back(self, where: str, **message: str) -> Response:
        return self._redirect(f"{PREFIX}{where}" + (f"?{urlencode(message)}" if message else ""))

    def _post(self, request: Request, sub: str, form: Mapping[str, list[str]]) -> Response:
        now = self.clock()
        if sub == "/retry":
            ids = [int(v) for v in form.get("id", []) if v.strip().isdigit()]
            all_dead = _first(form, "all_dead") == "1"
            back = _first(form, "back")
            back = (
                back
                if back in ("/dead", "/alerts", "/") or re.fullmatch(r"/alerts/\d{1,18}", back)
                else "/dead"
            )
            conn = self._write()
            try:
                rows = retry_rows(
                    conn,
                    now,
                    row_ids=ids,
                    all_dead=all_dead,
                    destination=_opt(form, "notifier"),
                )
            finally:
                conn.close()
            log_event(_log, logging.INFO, "console_retry", rows=len(rows), ids=[r.id for r in rows])
            return self._back(back, done=f"queued again: {len(rows)}")
        if sub == "/silences":
            try:
                duration = parse_duration(_first(form, "duration"))
                conn = self._write()
                try:
                    silence = add_silence(
                        conn,
                        now=now,
                        duration_secs=duration,
                        comment=_first(form, "comment"),
                        rule=_opt(form, "rule"),
                        host=_opt(form, "host"),
                        process=_opt(form, "process"),
                        remote=_opt(form, "remote"),
                    )
                finally:
                    conn.close()
            except ValueError as err:
                return self._back("/silences", error=str(err))
            log_event(_log, logging.INFO, "console_silence_added", silence=silence.id)
            return self._back("/silences", done=f"silence {silence.id} added")
        match = re.fullmatch(r"/silences/(\d{1,18})/expire", sub)
        if match:
            silence_id = int(match.group(1))
            conn = self._write()
            try:
                ended = expire_silence(conn, silence_id, now)
            finally:
                conn.close()
            if not ended:
                return self._back("/silences", error=f"no silence {silence_id} in force")
            log_event(_log, logging.INFO, "console_silence_expired", silence=silence_id)
            return self._back("/silences", done=f"silence {silence_id} expired")
        return self._text(404, "no such action\n")

    def _login(self, request: Request, cookies: Mapping[str, str]) -> Response:
        if request.method == "GET":
            return self._page(request, "login.html", {})
        form = self._form(request) or {}
        if not self.guard.csrf_ok(cookies.get(CSRF_COOKIE, ""), _first(form, "csrf")):
            return self._text(403, "refused: missing or wrong CSRF token; reload the page\n")
        if self.guard.token is None or not self.guard.token_matches(_first(form, "token")):
            log_event(_log, logging.WARNING, "console_login_failed")
            return self._back("/login", error="wrong token")
        response = self._redirect(f"{PREFIX}/")
        response.headers.append(
            ("Set-Cookie", cookie_header(SESSION_COOKIE, self.guard.session_value(), PREFIX))
        )
        return response
