"""Response actions through Fleet's REST API: ``fleet_script`` and ``fleet_live_query``.

Both are notifiers, so a rule's ``notify`` list names them like any destination and
the outbox delivers them with its rate limits and retries; their default rate limit is
conservative, 6 requests per minute with no burst (an entry's
``rate_limit_per_minute`` overrides it). Both first look the alert's host up in Fleet,
then act on it:

* host lookup — ``GET /api/v1/fleet/hosts/identifier/{identifier}?exclude_software=true``
  → ``{"host": {"id": N, ...}}``; the identifier is the host's ``hostname``, ``uuid`` or
  ``hardware_serial`` (Fleet REST API docs,
  https://github.com/fleetdm/fleet/blob/main/docs/REST%20API/rest-api.md, "Get host by identifier");
* ``fleet_script`` — ``POST /api/v1/fleet/scripts/run`` with ``{"host_id": N,
  "script_id": S}`` or ``{"host_id": N, "script_name": "x.sh", "team_id": T}`` → 202
  ``{"host_id", "execution_id"}``: Fleet queues a saved script for the host's fleetd
  (the same docs, "Run script"; fleetdm/fleet server/fleet/scripts.go
  ``HostScriptRequestPayload``; by name requires Fleet Premium);
* ``fleet_live_query`` — ``POST /api/v1/fleet/queries/{id}/run`` with ``{"host_ids":
  [N]}`` → ``{"query_id", "targeted_host_count", "responded_host_count", "results":
  [{"host_id", "rows", "error"}]}``: runs a *saved* query on the host and waits up to
  Fleet's ``FLEET_LIVE_QUERY_REST_PERIOD`` (25 s) for the answer (Fleet ≥ 4.43;
  https://github.com/fleetdm/fleet/blob/main/docs/REST%20API/queries.md,
  "Run live query"). The rows are written to
  ``evidence_dir/<alert id>.<notifier>.json`` when configured, and counted in the log.

Authentication is ``Authorization: Bearer <API token>`` (the REST API docs, "Authentication";
use an API-only user with the least role that can run scripts or queries). The token
is a secret that cannot be written inline: ``api_token: {env: NAME}`` or
``api_token: {file: /path}`` (systemd ``LoadCredential=`` fits the latter).

Which identifier: ``identifier: auto`` (default) uses the ``host_uuid`` decoration that
Fleet's default decorators add, else the ``hostIdentifier``; ``host_uuid``,
``hostname`` (the decoration) or ``host_identifier`` pick one.

Whose host (every value in a result line is written by the host's agent, so a hostile
host can write any of them):

* an identifier that is empty, longer than 255 characters, ``.``/``..`` or holds ``/``,
  ``\\``, ``?``, ``#``, ``%`` or a control character is refused before any request
  (``untrusted_host``): no hostname, UUID or serial has them, and they could steer the
  request to another API path;
* every identity the line claims (``hostIdentifier``, the ``host_uuid`` and
  ``hostname`` decorations) must name the host Fleet returned (its ``uuid``,
  ``hostname``, ``computer_name``, ``display_name``, ``hardware_serial`` or
  ``osquery_host_id``; case-insensitive; a name without a dot agrees with the first
  label of a full name). A line that names two hosts runs nothing (``untrusted_host``).
* ``fleet_script`` is disruptive, so by default it asks the host itself first, through
  Fleet's live query on one host (``POST /api/v1/fleet/hosts/{id}/query`` with
  ``{"query": SQL}`` → ``{"host_id", "rows", "query", "status", "error"}``; fleetdm/fleet
  server/service/live_queries.go ``runLiveQueryOnHostByIDEndpoint``): ``confirm:
  process`` (default) needs the host to report the alert's pid, with the same process
  name (a kernel name cut to 15 characters agrees with a longer name it begins);
  ``confirm: connection`` also needs the connection (pid, remote port and address, local
  port) in ``process_open_sockets``; ``confirm: none`` skips the question. A host that
  does not answer is asked again later (``no_answer``, retryable); a host that answers
  otherwise runs nothing (``not_confirmed``). The SQL carries only integers from the
  alert; names and addresses are compared here, never written into a query.

Errors follow :mod:`alert_service.notify.http`: 2xx is success; 408, 425, 429, 5xx,
timeouts and connection errors are retryable (``Retry-After`` kept); other statuses are
not (401/403: bad token or role; 404 on lookup: host unknown to Fleet; 402: Premium
feature). A live query the host did not answer in time is retryable; one the host
answered with an error (e.g. ``no such table``) is not. Fleet offers no idempotency key
for these calls: if a reply is lost after Fleet queued a script, a retry queues it again.

Config::

    - name: fleet-kill
      type: fleet_script
      url: https://fleet.example.com
      api_token: {env: FLEET_API_TOKEN}    # or {file: /run/credentials/<unit>/fleet}
      script_id: 42                        # or script_name: kill-pid.sh (+ team_id: 3)
      identifier: auto                     # auto | host_uuid | hostname | host_identifier
      confirm: process                     # process | connection | none
      timeout_secs: 30                     # read timeout (default 30)
      connect_timeout_secs: 5
      ca_file: /etc/ssl/certs/fleet-ca.pem # optional; default: the bundled CAs
      total_timeout_secs: 60               # one whole request (default max(60, 2 x read))
      proxy_url: http://proxy.example:3128 # optional; the environment's proxies are not used
    - name: fleet-evidence
      type: fleet_live_query
      url: https://fleet.example.com
      api_token: {env: FLEET_API_TOKEN}
      query_id: 17                         # a saved query (report) in Fleet
      evidence_dir: /var/lib/tracked-connections-alerts/evidence
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self, cast

from alert_service.errors import NotifyError
from alert_service.logs import log_event
from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier
from alert_service.notify.http import (
    HTTP_TIMEOUT_PROPERTIES,
    USER_AGENT,
    encode_json,
    parse_retry_after,
    transport_error,
)
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret, reveal

if TYPE_CHECKING:
    import requests

__all__ = [
    "Confirm",
    "FleetClient",
    "FleetLiveQueryNotifier",
    "FleetScriptNotifier",
    "FleetSettings",
    "checked_identifier",
    "disagreeing_claims",
    "host_identifier_for",
    "identity_claims",
]

_log = logging.getLogger("alert_service.notify.fleet")

Identifier = Literal["auto", "host_uuid", "hostname", "host_identifier"]
Confirm = Literal["process", "connection", "none"]

_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_SNIPPET_CHARS: Final = 200
_MAX_IDENTIFIER_CHARS: Final = 255
_PATH_CHARACTERS: Final = frozenset("/\\?#%")
_IDENTITY_FIELDS: Final = (
    "uuid",
    "hostname",
    "computer_name",
    "display_name",
    "hardware_serial",
    "osquery_host_id",
)
_KERNEL_NAME_CHARS: Final = 15
"""Linux keeps 15 characters of a task name (``TASK_COMM_LEN`` 16 with the NUL)."""
_SECRET = {"$ref": "#/$defs/secret_string"}
_SECRET_REF = {"$ref": "#/$defs/secret_ref"}
_COMMON_PROPERTIES: Final[Mapping[str, Any]] = {
    "url": {**_SECRET, "pattern": "^https?://[^\\s/]+(/[^\\s]*)?$"},
    "api_token": _SECRET_REF,
    "identifier": {"enum": ["auto", "host_uuid", "hostname", "host_identifier"]},
    **HTTP_TIMEOUT_PROPERTIES,
}


def checked_identifier(notifier: str, identifier: str) -> str:
    """Return ``identifier`` when it can only name a host, never another API path.

    Raises:
        NotifyError: ``untrusted_host`` (not retryable): empty, longer than 255
            characters, ``.`` or ``..``, or holding ``/ \\ ? # %`` or a control character.
    """
    bad = (
        not identifier
        or len(identifier) > _MAX_IDENTIFIER_CHARS
        or identifier in (".", "..")
        or any(ch in _PATH_CHARACTERS or not ch.isprintable() for ch in identifier)
    )
    if bad:
        what = "no host identifier" if not identifier else "a host identifier no host has"
        raise NotifyError(
            f"{notifier}: the alert has {what} ({_printable(identifier)!r}); nothing was asked",
            retryable=False,
            error_type="untrusted_host",
        )
    return identifier


def identity_claims(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The host identities an :meth:`Alert.as_dict` payload claims, as (where, value).

    ``where`` is ``hostIdentifier``, ``decorations.host_uuid`` or
    ``decorations.hostname``; empty values are left out.
    """
    decorations = alert.get("decorations") or {}
    claims = [
        ("hostIdentifier", alert.get("host")),
        ("decorations.host_uuid", decorations.get("host_uuid")),
        ("decorations.hostname", decorations.get("hostname")),
    ]
    return [(where, str(value)) for where, value in claims if value]


def _names_agree(claimed: str, known: str) -> bool:
    a, b = claimed.casefold(), known.casefold()
    if a == b:
        return True
    if "." not in a:
        return a == b.split(".", 1)[0]
    if "." not in b:
        return b == a.split(".", 1)[0]
    return False


def disagreeing_claims(alert: Mapping[str, Any], host: Mapping[str, Any]) -> list[str]:
    """Where the alert claims an identity that the Fleet host record does not have.

    Args:
        alert: the alert payload (:meth:`Alert.as_dict`).
        host: Fleet's host record (the ``host`` object of "Get host by identifier").

    Returns:
        The ``where`` of each disagreeing claim (see :func:`identity_claims`); empty
        when every claim names this host.
    """
    known = [str(host[k]) for k in _IDENTITY_FIELDS if host.get(k)]
    return [
        where
        for where, value in identity_claims(alert)
        if not any(_names_agree(value, k) for k in known)
    ]


def host_identifier_for(alert: Mapping[str, Any], identifier: Identifier) -> str:
    """Pick the text to look the host up by, from an :meth:`Alert.as_dict` payload.

    Args:
        alert: the alert payload (``host`` and ``decorations``).
        identifier: ``auto`` (``host_uuid`` decoration, else ``host``), ``host_uuid``,
            ``hostname`` (decorations) or ``host_identifier`` (``host``).

    Returns:
        The identifier; ``""`` when the chosen value is missing.
    """
    decorations = alert.get("decorations") or {}
    host = str(alert.get("host") or "")
    if identifier == "host_identifier":
        return host
    if identifier in ("host_uuid", "hostname"):
        return str(decorations.get(identifier) or "")
    return str(decorations.get("host_uuid") or host)


@dataclass(frozen=True, slots=True)
class FleetSettings:
    """Connection options shared by the Fleet notifiers.

    Attributes:
        url: Fleet server base URL, e.g. ``https://fleet.example.com``.
        api_token: API token (a secret from the environment or a file).
        identifier: which alert value identifies the host (see
            :func:`host_identifier_for`).
        confirm: what the host must report before a disruptive action (see the
            module docs); ``fleet_live_query`` ignores it.
        timeout_secs: read timeout, seconds.
        connect_timeout_secs: connect timeout, seconds.
        ca_file: CA bundle for TLS verification; None for the default bundle.
        total_timeout_secs: deadline of one whole request, seconds.
        proxy_url: proxy to use, or None for none (the environment is never read).
    """

    url: str | Secret
    api_token: str | Secret
    identifier: Identifier = "auto"
    confirm: Confirm = "process"
    timeout_secs: float = 30.0
    connect_timeout_secs: float = 5.0
    ca_file: str | None = None
    total_timeout_secs: float = 60.0
    proxy_url: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any], default_timeout_secs: float) -> Self:
        """Build from validated notifier options."""
        return cls(
            url=options["url"],
            api_token=options["api_token"],
            identifier=cast(Identifier, options.get("identifier", "auto")),
            confirm=cast(Confirm, options.get("confirm", "process")),
            timeout_secs=float(options.get("timeout_secs", default_timeout_secs)),
            connect_timeout_secs=float(options.get("connect_timeout_secs", 5.0)),
            ca_file=options.get("ca_file"),
            total_timeout_secs=float(
                options.get("total_timeout_secs", max(60.0, 2 * default_timeout_secs))
            ),
            proxy_url=options.get("proxy_url"),
        )


class FleetClient:
    """The few Fleet REST calls the actions need, with errors mapped to NotifyError.

    Args:
        notifier: notifier name, for messages (never the URL or token).
        settings: connection options.
        session: HTTP session (a new one when None); closed by :meth:`close`.
    """

    def __init__(
        self, notifier: str, settings: FleetSettings, session: requests.Session | None = None
    ) -> None:
        # requests and the session module when a client is made (alert_service/notify/http.py)
        from alert_service.notify.session import exact_session  # noqa: PLC0415

        self.notifier = notifier
        self.settings = settings
        self.session = (
            session if session is not None else exact_session(settings.proxy_url, settings.ca_file)
        )

    def request(
        self, method: str, path: str, *, body: Mapping[str, Any] | None = None, what: str
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON object of a 2xx reply.

        Args:
            method: ``GET`` or ``POST``.
            path: path and query below the base URL, starting ``/api/v1/fleet/``.
            body: JSON body for POST.
            what: short label for messages (``host lookup``, ``run script``).

        Raises:
            NotifyError: non-2xx status, timeout, connection problem, or a reply that
                is not a JSON object (see the module docs for what is retryable).
        """
        import requests  # noqa: PLC0415 - imported when used (alert_service/notify/http.py)

        from alert_service.notify.session import deadline  # noqa: PLC0415

        url = reveal(self.settings.url).rstrip("/") + path
        headers = {
            "Authorization": f"Bearer {reveal(self.settings.api_token)}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            data = encode_json(body)
        name = self.notifier
        watch = None
        try:
            with (
                deadline(self.settings.total_timeout_secs) as watch,
                self.session.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    timeout=(self.settings.connect_timeout_secs, self.settings.timeout_secs),
                    allow_redirects=False,
                    verify=self.settings.ca_file or True,
                ) as resp,
            ):
                status = resp.status_code
                text = resp.text
                retry_after = resp.headers.get("Retry-After")
                reason = resp.reason or ""
        except requests.RequestException as err:
            if watch is not None and watch.fired:
                raise NotifyError(
                    f"{name}: {what}: timed out (total {self.settings.total_timeout_secs:g} s)",
                    retryable=True,
                    error_type="timeout",
                ) from err
            raise transport_error(f"{name}: {what}", err) from err
        if not 200 <= status < 300:
            retryable = status in _RETRYABLE_STATUS or 500 <= status < 600
            detail = _fleet_message(text)
            raise NotifyError(
                f"{name}: {what}: HTTP {status} {reason}".rstrip()
                + (f": {detail}" if detail else ""),
                retryable=retryable,
                retry_after_secs=parse_retry_after(retry_after) if retryable else None,
                error_type="http_status",
            )
        try:
            doc = json.loads(text) if text.strip() else {}
        except ValueError as err:
            raise NotifyError(
                f"{name}: {what}: reply is not JSON", retryable=False, error_type="http_status"
            ) from err
        if not isinstance(doc, dict):
            raise NotifyError(
                f"{name}: {what}: reply is not a JSON object",
                retryable=False,
                error_type="http_status",
            )
        return doc

    def host(self, identifier: str) -> dict[str, Any]:
        """Fleet's record of the host with this hostname, UUID or serial.

        Returns:
            the ``host`` object, whose ``id`` is an int.

        Raises:
            NotifyError: an identifier :func:`checked_identifier` refuses, an unknown
                host (not retryable), or the request failed.
        """
        quoted = urllib.parse.quote(checked_identifier(self.notifier, identifier), safe="")
        doc = self.request(
            "GET",
            f"/api/v1/fleet/hosts/identifier/{quoted}?exclude_software=true",
            what="host lookup",
        )
        host = doc.get("host")
        host_id = host.get("id") if isinstance(host, dict) else None
        if not isinstance(host, dict) or not isinstance(host_id, int) or isinstance(host_id, bool):
            raise NotifyError(
                f"{self.notifier}: host lookup: reply has no host id",
                retryable=False,
                error_type="http_status",
            )
        return host

    def host_id(self, identifier: str) -> int:
        """Fleet's id of the host with this hostname, UUID or serial (see :meth:`host`)."""
        return int(self.host(identifier)["id"])

    def query_host(self, host_id: int, sql: str) -> list[dict[str, Any]]:
        """Run ``sql`` on one host now and return its rows.

        Raises:
            NotifyError: ``no_answer`` (retryable) when the host is not online or did
                not answer; ``host_error`` (not retryable) when it answered with an
                error; or the request failed.
        """
        doc = self.request(
            "POST", f"/api/v1/fleet/hosts/{host_id}/query", body={"query": sql}, what="ask host"
        )
        status, error = str(doc.get("status") or ""), str(doc.get("error") or "")
        if status != "online":
            raise NotifyError(
                f"{self.notifier}: ask host: host {host_id} is {_printable(status) or 'silent'}"
                + (f": {_printable(error)}" if error else ""),
                retryable=True,
                error_type="no_answer",
            )
        if error:
            raise NotifyError(
                f"{self.notifier}: ask host: host {host_id} answered with an error: "
                + _printable(error),
                retryable=False,
                error_type="host_error",
            )
        rows = doc.get("rows")
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


def _fleet_message(text: str) -> str:
    """Fleet's error text (``message`` and first ``errors[].reason``), printable, short."""
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        parts = [str(doc.get("message") or "")]
        errors = doc.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = str(errors[0].get("reason") or "")
            if reason and reason != parts[0]:
                parts.append(reason)
        text = ": ".join(p for p in parts if p)
    return _printable(text)


def _printable(text: str) -> str:
    """``text`` cut to 200 characters, control characters and runs of spaces folded."""
    text = text[:_SNIPPET_CHARS]
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


class _FleetAction(Notifier):
    """Shared parts of the two Fleet actions."""

    default_timeout_secs: ClassVar[float] = 30.0

    def __init__(
        self, name: str, settings: FleetSettings, session: requests.Session | None = None
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.client = FleetClient(name, settings, session)

    def _base_payload(self, alert: Alert) -> dict[str, Any]:
        alert_dict = alert.as_dict()
        return {
            "identifier": host_identifier_for(alert_dict, self.settings.identifier),
            "alert": alert_dict,
        }

    def _target(self, payload: Mapping[str, Any]) -> int:
        """Look the host up and check that the line names no other host; its Fleet id.

        Raises:
            NotifyError: see :meth:`FleetClient.host`; ``untrusted_host`` when a claim
                disagrees with Fleet's record.
        """
        host = self.client.host(str(payload.get("identifier") or ""))
        disagreeing = disagreeing_claims(payload.get("alert") or {}, host)
        if disagreeing:
            raise NotifyError(
                f"{self.name}: the line names another host than Fleet's host {host['id']} "
                f"in {', '.join(disagreeing)}; nothing was run",
                retryable=False,
                error_type="untrusted_host",
            )
        return int(host["id"])

    def close(self) -> None:
        """Close the HTTP session."""
        self.client.close()


@register_notifier("fleet_script")
class FleetScriptNotifier(_FleetAction):
    """Run a saved Fleet script on the alert's host.

    Args:
        name: configured notifier name.
        settings: connection options.
        script_id: saved script id, or None when ``script_name`` is used.
        script_name: saved script name (Fleet Premium), or None.
        team_id: team (fleet) owning ``script_name``; None for "No team".
        session: HTTP session for tests.

    Raises:
        ValueError: not exactly one of ``script_id`` and ``script_name``, or
            ``team_id`` without ``script_name`` (the config schema refuses these first).
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 6.0
    """Conservative default: one request every 10 s (entry ``rate_limit_per_minute``)."""
    default_rate_limit_burst: ClassVar[int] = 1

    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            **_COMMON_PROPERTIES,
            "script_id": {"type": "integer", "minimum": 1},
            "script_name": {"type": "string", "minLength": 1},
            "team_id": {"type": "integer", "minimum": 0},
            "confirm": {"enum": ["process", "connection", "none"]},
        },
        "required": ["url", "api_token"],
        "allOf": [
            {
                "oneOf": [
                    {"required": ["script_id"], "not": {"required": ["script_name"]}},
                    {"required": ["script_name"], "not": {"required": ["script_id"]}},
                ]
            },
            {"dependentRequired": {"team_id": ["script_name"]}},
        ],
    }

    def __init__(  # noqa: PLR0917 - settings plus the three script options
        self,
        name: str,
        settings: FleetSettings,
        script_id: int | None = None,
        script_name: str | None = None,
        team_id: int | None = None,
        session: requests.Session | None = None,
    ) -> None:
        if (script_id is None) == (script_name is None):
            raise ValueError("exactly one of script_id and script_name is needed")
        if team_id is not None and script_name is None:
            raise ValueError("team_id goes with script_name only")
        super().__init__(name, settings, session)
        self.script_id = script_id
        self.script_name = script_name
        self.team_id = team_id

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(
            name,
            FleetSettings.from_options(options, cls.default_timeout_secs),
            script_id=options.get("script_id"),
            script_name=options.get("script_name"),
            team_id=options.get("team_id"),
        )

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return ``{"identifier", "script": {script_id | script_name[, team_id]}, "alert"}``."""
        script: dict[str, Any] = {}
        if self.script_id is not None:
            script["script_id"] = self.script_id
        else:
            script["script_name"] = self.script_name
            if self.team_id is not None:
                script["team_id"] = self.team_id
        return {**self._base_payload(alert), "script": script}

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """Look the host up and queue the script on it.

        Raises:
            NotifyError: see the module docs.
        """
        host_id = self._target(payload)
        connection = (payload.get("alert") or {}).get("connection") or {}
        if self.settings.confirm != "none":
            self._confirm_process(host_id, connection)
        if self.settings.confirm == "connection":
            self._confirm_connection(host_id, connection)
        body = {"host_id": host_id, **dict(payload.get("script") or {})}
        doc = self.client.request("POST", "/api/v1/fleet/scripts/run", body=body, what="run script")
        log_event(
            _log,
            logging.INFO,
            "fleet_script_queued",
            notifier=self.name,
            alert_id=idempotency_key,
            host_id=host_id,
            execution_id=doc.get("execution_id"),
        )

    def _refuse(self, host_id: int, why: str) -> NotifyError:
        return NotifyError(
            f"{self.name}: not confirmed: host {host_id} {why}; the script was not run",
            retryable=False,
            error_type="not_confirmed",
        )

    def _confirm_process(self, host_id: int, connection: Mapping[str, Any]) -> None:
        pid = _positive_int(connection.get("pid"))
        if pid is None:
            raise self._refuse(host_id, "cannot be asked: the alert names no process")
        rows = self.client.query_host(
            host_id, f"SELECT pid, name, path FROM processes WHERE pid = {pid};"
        )
        row = next((r for r in rows if str(r.get("pid")) == str(pid)), None)
        if row is None:
            raise self._refuse(host_id, f"reports no process {pid}")
        if not _process_names_agree(str(connection.get("name") or ""), str(row.get("name") or "")):
            raise self._refuse(host_id, f"says process {pid} is {_printable(str(row.get('name')))}")

    def _confirm_connection(self, host_id: int, connection: Mapping[str, Any]) -> None:
        pid = _positive_int(connection.get("pid"))
        remote_port = _positive_int(connection.get("remote_port"))
        if pid is None or remote_port is None:
            raise self._refuse(host_id, "cannot be asked: the alert names no connection")
        rows = self.client.query_host(
            host_id,
            "SELECT pid, local_address, local_port, remote_address, remote_port "
            f"FROM process_open_sockets WHERE pid = {pid} AND remote_port = {remote_port};",
        )
        wanted = (
            _address(connection.get("remote_address")),
            str(connection.get("local_port") or ""),
        )
        if not any(
            (_address(r.get("remote_address")), str(r.get("local_port") or "")) == wanted
            for r in rows
        ):
            raise self._refuse(host_id, f"reports no such connection of process {pid}")


def _positive_int(value: Any) -> int | None:
    """``value`` as a positive int (ints and digit strings only), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) or None
    return None


def _process_names_agree(alerted: str, reported: str) -> bool:
    """Same name, or the host's kernel name is the 15-character head of the alert's."""
    if not alerted or alerted == reported:
        return True
    return len(reported) == _KERNEL_NAME_CHARS and alerted.startswith(reported)


def _address(value: Any) -> str:
    """An address in one spelling (IPv4-mapped IPv6 as IPv4); other text as it is."""
    text = str(value or "")
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


@register_notifier("fleet_live_query")
class FleetLiveQueryNotifier(_FleetAction):
    """Run a saved query on the alert's host through Fleet and keep its rows as evidence.

    Args:
        name: configured notifier name.
        settings: connection options.
        query_id: the saved query (report) to run.
        evidence_dir: directory for ``<alert id>.<notifier>.json`` files, or None to
            only log how many rows came back.
        session: HTTP session for tests.
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 6.0
    """Conservative default: one request every 10 s (entry ``rate_limit_per_minute``)."""
    default_rate_limit_burst: ClassVar[int] = 1

    default_timeout_secs: ClassVar[float] = 40.0
    """Fleet answers within its live-query period (25 s by default), plus margin."""

    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            **_COMMON_PROPERTIES,
            "query_id": {"type": "integer", "minimum": 1},
            "evidence_dir": {"type": "string", "pattern": "^/"},
        },
        "required": ["url", "api_token", "query_id"],
    }

    def __init__(
        self,
        name: str,
        settings: FleetSettings,
        query_id: int,
        evidence_dir: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(name, settings, session)
        self.query_id = query_id
        self.evidence_dir = evidence_dir

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        return cls(
            name,
            FleetSettings.from_options(options, cls.default_timeout_secs),
            query_id=int(options["query_id"]),
            evidence_dir=options.get("evidence_dir"),
        )

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return ``{"identifier", "query_id", "alert"}``."""
        return {**self._base_payload(alert), "query_id": self.query_id}

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """Look the host up, run the query on it and store the rows.

        Raises:
            NotifyError: see the module docs; also when the evidence file cannot be
                written (retryable: the disk may have room later).
        """
        host_id = self._target(payload)
        query_id = int(payload.get("query_id") or self.query_id)
        doc = self.client.request(
            "POST",
            f"/api/v1/fleet/queries/{query_id}/run",
            body={"host_ids": [host_id]},
            what="live query",
        )
        results = doc.get("results")
        mine = None
        if isinstance(results, list):
            mine = next(
                (r for r in results if isinstance(r, dict) and r.get("host_id") == host_id), None
            )
        if mine is None:
            raise NotifyError(
                f"{self.name}: live query: host {host_id} did not answer within Fleet's "
                "live query period",
                retryable=True,
                error_type="no_answer",
            )
        if mine.get("error"):
            raise NotifyError(
                f"{self.name}: live query: host {host_id} answered with an error: "
                + _printable(str(mine["error"])),
                retryable=False,
                error_type="host_error",
            )
        raw_rows = mine.get("rows")
        rows: list[Any] = raw_rows if isinstance(raw_rows, list) else []
        evidence = None
        if self.evidence_dir is not None:
            evidence = self._write_evidence(payload, idempotency_key, host_id, query_id, rows)
        log_event(
            _log,
            logging.INFO,
            "fleet_live_query_done",
            notifier=self.name,
            alert_id=idempotency_key,
            host_id=host_id,
            query_id=query_id,
            rows=len(rows),
            evidence=evidence,
        )

    def _write_evidence(
        self,
        payload: Mapping[str, Any],
        alert_id: str,
        host_id: int,
        query_id: int,
        rows: list[Any],
    ) -> str:
        folder = Path(self.evidence_dir or "")
        safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
        target = folder / f"{alert_id}.{safe_name}.json"
        record = {
            "alert": payload.get("alert"),
            "fleet": {"query_id": query_id, "host_id": host_id, "rows": rows},
            "collected_at": int(time.time()),
        }
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o750)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "wb") as fh:
                fh.write(encode_json(record) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as err:
            raise NotifyError(
                f"{self.name}: cannot write evidence to {folder}: {err.strerror or err}",
                retryable=True,
                error_type="internal",
            ) from err
        return str(target)
