"""Shared HTTP parts of notifiers: JSON POST with timeouts and status mapping, and the
base of the notifiers that POST (options, settings, transport).

:class:`HttpNotifier` (with :class:`HttpSettings` and :data:`HTTP_TIMEOUT_PROPERTIES`)
holds what every HTTP notifier shares — the ``timeout_secs`` / ``connect_timeout_secs``
options (schema, defaults 10 s and 5 s), the transport, ``post`` with those timeouts
and ``close`` — so a notifier type declares only its own options, payload and success check.

:class:`HttpTransport` is the one place where :mod:`requests` errors become
:class:`~alert_service.errors.NotifyError` (docs/design/delivery.md):

* any 2xx → success;
* 408, 425, 429 and 5xx → retryable, with ``Retry-After`` (seconds or HTTP date) kept;
* timeouts, connection errors and any failure once the request is on its way (a reply
  cut short, an undecodable body) → retryable (:func:`transport_error`); the message
  names the cause — ``ECONNREFUSED``, name resolution, proxy, TLS;
* an attempt that outlasts ``total_timeout_secs`` (default 30 s) in all — connect,
  TLS, sending, headers and the body read — is cut (:mod:`alert_service.notify.session`)
  and retryable: a server trickling one byte at a time cannot hold a worker;
* redirects (not followed: a POST must not silently turn into a GET) and other 4xx
  (400, 404, 410 Gone, ...) → not retryable: the outbox dead-letters them; so is a
  request that cannot be made at all (an invalid header value or URL).

Only the first KiB of a response body is read (for Slack's ``ok`` and for messages).

Messages carry the notifier name and status, never the URL or headers (they may hold
tokens).

Requests carry exactly what the config says: nothing from ``~/.netrc`` and no proxy or
CA bundle from the environment; the ``proxy_url`` and ``ca_file`` options set them
(:func:`~alert_service.notify.session.exact_session`).
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypedDict, TypeVar

from alert_service import __version__
from alert_service.errors import NotifyError
from alert_service.notify.base import Notifier

if TYPE_CHECKING:
    import requests

# requests and urllib3 (with alert_service.notify.session, built on them), and ssl and
# email.utils, are imported when a notifier first sends, not with this module: the
# configuration loader imports every notifier for its settings, and `replay` never
# sends (about 0.07 s of its start-up, docs/design/alert-matching.md).

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_SECS",
    "DEFAULT_TIMEOUT_SECS",
    "DEFAULT_TOTAL_TIMEOUT_SECS",
    "HTTP_TIMEOUT_PROPERTIES",
    "USER_AGENT",
    "HttpNotifier",
    "HttpReply",
    "HttpSettings",
    "HttpTimeouts",
    "HttpTransport",
    "encode_json",
    "parse_retry_after",
    "transport_error",
]

USER_AGENT: Final = f"tracked-connections-alerts/{__version__}"
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_BODY_SNIPPET_CHARS: Final = 200
_BODY_HEAD_BYTES: Final = 1024


def _request_not_made() -> tuple[type[Exception], ...]:
    """The errors raised before anything is sent, the same on every attempt: never
    retried."""
    import requests  # noqa: PLC0415 - see the imports

    return (
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidHeader,
        requests.exceptions.URLRequired,
        requests.exceptions.InvalidJSONError,
    )

_EAI_NAMES: Final = {
    getattr(socket, n): n for n in dir(socket) if n.startswith("EAI_") and n != "EAI_SYSTEM"
}


def encode_json(payload: Mapping[str, object]) -> bytes:
    """Serialise ``payload`` as compact UTF-8 JSON.

    Non-ASCII text is written as UTF-8; if the payload holds text that UTF-8 cannot
    encode (lone surrogates from ``\\ud800`` escapes in a log line), it falls back to
    ASCII-only JSON with ``\\u`` escapes, which is still valid UTF-8.

    Raises:
        NotifyError: the payload is not JSON-serialisable (not retryable).
    """
    try:
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as err:
        raise NotifyError(
            f"payload is not JSON: {err}", retryable=False, error_type="encoding"
        ) from err


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Return the wait requested by a ``Retry-After`` header, in seconds, or None.

    Args:
        value: the header value: delay seconds (``"120"``) or an HTTP date.
        now: current Unix time in seconds (default ``time.time()``), for dates.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils  # noqa: PLC0415 - see the imports

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _head_text(resp: requests.Response) -> str:
    """Read at most :data:`_BODY_HEAD_BYTES` of the body and decode it leniently."""
    data = b""
    for chunk in resp.iter_content(chunk_size=_BODY_HEAD_BYTES):
        data += chunk
        if len(data) >= _BODY_HEAD_BYTES:
            break
    head = data[:_BODY_HEAD_BYTES]
    try:
        return head.decode(resp.encoding or "utf-8", "replace")
    except LookupError:  # an unknown charset name
        return head.decode("utf-8", "replace")


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A 2xx response.

    Attributes:
        status: the status code.
        text: the start of the body (at most 1 KiB), decoded leniently.
        headers: response headers (case-insensitive mapping).
    """

    status: int
    text: str
    headers: Mapping[str, str]


class HttpTransport:
    """POST bodies for one notifier over a pooled :class:`requests.Session`.

    Args:
        notifier: notifier name, used in error messages.
        session: session to use (a new :func:`exact_session` when None); closed by
            :meth:`close`.
        total_timeout_secs: deadline of one whole attempt, seconds.
        proxy_url: proxy of a new session (``proxy_url`` option), or None.
        ca_file: CA bundle of a new session (``ca_file`` option), or None.
    """

    def __init__(
        self,
        notifier: str,
        session: requests.Session | None = None,
        *,
        total_timeout_secs: float | None = None,
        proxy_url: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        from alert_service.notify.session import exact_session  # noqa: PLC0415

        self.notifier = notifier
        self.session = session if session is not None else exact_session(proxy_url, ca_file)
        self.total_timeout_secs = (
            DEFAULT_TOTAL_TIMEOUT_SECS if total_timeout_secs is None else total_timeout_secs
        )
        self.last_status: int | None = None
        """Status code of the last reply (any status), None before one; ``test-notifier``."""

    def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        connect_timeout_secs: float,
        read_timeout_secs: float,
    ) -> HttpReply:
        """POST ``body`` (UTF-8 JSON bytes) and check the status.

        Args:
            url: destination URL (may contain a token; never logged).
            body: the exact bytes to send (signatures are computed over them).
            headers: extra request headers; ``Content-Type: application/json;
                charset=utf-8`` and ``User-Agent`` are set unless given here.
            connect_timeout_secs: TCP connect timeout, seconds.
            read_timeout_secs: timeout between bytes of the response, seconds.

        Returns:
            The 2xx reply.

        Raises:
            NotifyError: non-2xx status, timeout or connection problem (see module docs).
        """
        import requests  # noqa: PLC0415 - see the imports

        from alert_service.notify.session import deadline  # noqa: PLC0415

        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            **headers,
        }
        name = self.notifier
        watch = None
        try:
            with (
                deadline(self.total_timeout_secs) as watch,
                self.session.post(
                    url,
                    data=body,
                    headers=all_headers,
                    timeout=(connect_timeout_secs, read_timeout_secs),
                    allow_redirects=False,
                    stream=True,
                ) as resp,
            ):
                status = resp.status_code
                self.last_status = status
                text = _head_text(resp)
                if 200 <= status < 300:
                    return HttpReply(status, text, resp.headers)
                retryable = status in _RETRYABLE_STATUS or 500 <= status < 600
                detail = _printable(text[:_BODY_SNIPPET_CHARS])
                raise NotifyError(
                    f"{name}: HTTP {status} {resp.reason or ''}".rstrip()
                    + (f": {detail}" if detail else ""),
                    retryable=retryable,
                    retry_after_secs=parse_retry_after(resp.headers.get("Retry-After"))
                    if retryable
                    else None,
                    error_type="http_status",
                )
        except requests.RequestException as err:
            if watch is not None and watch.fired:
                raise NotifyError(
                    f"{name}: timed out (total {self.total_timeout_secs:g} s)",
                    retryable=True,
                    error_type="timeout",
                ) from err
            raise transport_error(name, err) from err

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (urllib3's ``reason``, ``__cause__``, ``__context__``,
    exception arguments), breadth first, each once."""
    seen: set[int] = set()
    queue: list[BaseException] = [err]
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        nested = (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        )
        queue += [n for n in nested if isinstance(n, BaseException)]


def _os_reason(err: BaseException) -> str | None:
    """``ECONNREFUSED (Connection refused)`` for the first OS error inside ``err``;
    ``name resolution failed (EAI_AGAIN: ...)`` for a resolver error; None otherwise."""
    for cause in _causes(err):
        if isinstance(cause, socket.gaierror):
            code = _EAI_NAMES.get(cause.errno, str(cause.errno))
            return f"name resolution failed ({code}: {cause.strerror})"
    for cause in _causes(err):
        if isinstance(cause, OSError) and cause.errno is not None:
            name = errno.errorcode.get(cause.errno)
            if name is not None:
                return f"{name} ({cause.strerror})"
    return None


def _type_name(err: BaseException) -> str:
    name = type(err).__name__
    return f"{type(err).__module__}.{name}" if name == "error" else name


def transport_error(where: str, err: requests.RequestException) -> NotifyError:
    """Translate a :mod:`requests` failure into a :class:`NotifyError` naming its cause.

    Messages name the cause (errno name and text, ``name resolution failed``, the
    exception type) but never a URL, host or header value, which may hold tokens.

    Args:
        where: message prefix, e.g. the notifier name.
        err: what ``requests`` raised.

    Returns:
        The error to raise; ``error_type`` is ``timeout``, ``dns``, ``proxy``, ``tls``,
        ``connection``, ``transport`` (the reply broke: cut short, undecodable) — all
        retryable — or ``request`` (the request cannot be made: an invalid header or
        URL; not retryable, it would fail the same way every time).
    """
    kind = type(err).__name__
    import ssl  # noqa: PLC0415 - see the imports

    import requests  # noqa: PLC0415
    from urllib3.exceptions import NameResolutionError  # noqa: PLC0415

    if isinstance(err, _request_not_made()):
        return NotifyError(
            f"{where}: request cannot be made ({kind})", retryable=False, error_type="request"
        )
    if isinstance(err, requests.Timeout):
        phase = "connect" if isinstance(err, requests.ConnectTimeout) else "read"
        return NotifyError(f"{where}: timed out ({phase})", retryable=True, error_type="timeout")
    # The deepest wrapped exception says most: IncompleteRead, RemoteDisconnected,
    # zlib.error (a bare "error" gets its module).
    wrapped = [_type_name(c) for c in _causes(err) if not isinstance(c, requests.RequestException)]
    reason = _os_reason(err) or (wrapped[-1] if wrapped else "")
    if isinstance(err, requests.exceptions.ProxyError):
        return NotifyError(
            f"{where}: proxy failed: {reason or kind}", retryable=True, error_type="proxy"
        )
    if isinstance(err, requests.exceptions.SSLError):
        detail = next(
            (c.reason or c.strerror for c in _causes(err) if isinstance(c, ssl.SSLError)),
            kind,
        )
        return NotifyError(f"{where}: TLS failed: {detail}", retryable=True, error_type="tls")
    if isinstance(err, requests.ConnectionError):
        dns = any(isinstance(c, NameResolutionError | socket.gaierror) for c in _causes(err))
        return NotifyError(
            f"{where}: connection failed: {reason or kind}",
            retryable=True,
            error_type="dns" if dns else "connection",
        )
    # The request went out; the reply broke (cut short, undecodable): try again.
    return NotifyError(
        f"{where}: reply unreadable ({kind}{': ' + reason if reason else ''})",
        retryable=True,
        error_type="transport",
    )


# -- what every HTTP notifier shares ----------------------------------------------------

DEFAULT_TIMEOUT_SECS: Final = 10.0
"""Read timeout of an HTTP notifier whose entry sets no ``timeout_secs``, seconds."""

DEFAULT_CONNECT_TIMEOUT_SECS: Final = 5.0
"""Connect timeout of an HTTP notifier whose entry sets no ``connect_timeout_secs``, seconds."""

DEFAULT_TOTAL_TIMEOUT_SECS: Final = 30.0
"""Deadline of one whole attempt when the entry sets no ``total_timeout_secs``, seconds."""

HTTP_TIMEOUT_PROPERTIES: Final[Mapping[str, Any]] = {
    "timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
    "connect_timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
    "total_timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
    "proxy_url": {"type": "string", "pattern": "^(https?|socks5h?)://[^\\s]+$"},
    "ca_file": {"type": "string", "pattern": "^/"},
}
"""JSON Schema ``properties`` of the connection options every notifier that makes
HTTP requests takes: the timeouts (seconds, above 0; ``total_timeout_secs`` bounds a
whole attempt), ``proxy_url`` and ``ca_file`` (an absolute path to a PEM bundle).
:meth:`HttpNotifier.options_schema` appends them; a schema that lays its keys out
itself splices them in."""


class HttpTimeouts(TypedDict):
    """The connection keywords of :class:`HttpSettings`, as :meth:`HttpSettings.timeouts`
    returns them."""

    timeout_secs: float
    connect_timeout_secs: float
    total_timeout_secs: float
    proxy_url: str | None
    ca_file: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    """Options every HTTP notifier takes; a type's settings dataclass extends it.

    Subclasses are ``@dataclass(frozen=True, slots=True, kw_only=True)`` and add the
    type's own fields (keyword-only, so required fields may follow these defaults).

    Attributes:
        timeout_secs: read timeout (between bytes of the response), seconds.
        connect_timeout_secs: TCP connect timeout, seconds.
        total_timeout_secs: deadline of one whole attempt, seconds.
        proxy_url: the proxy to use, or None for none (the environment is never read).
        ca_file: CA bundle to verify TLS with, or None for the default bundle.
    """

    timeout_secs: float = DEFAULT_TIMEOUT_SECS
    connect_timeout_secs: float = DEFAULT_CONNECT_TIMEOUT_SECS
    total_timeout_secs: float = DEFAULT_TOTAL_TIMEOUT_SECS
    proxy_url: str | None = None
    ca_file: str | None = None

    @staticmethod
    def timeouts(options: Mapping[str, Any]) -> HttpTimeouts:
        """Return the timeouts of validated notifier ``options``, defaults filled in.

        For building a subclass: ``SlackSettings(url=..., **SlackSettings.timeouts(options))``.

        Args:
            options: the entry's options, valid against :data:`HTTP_TIMEOUT_PROPERTIES`.

        Returns:
            ``timeout_secs`` (default 10), ``connect_timeout_secs`` (default 5) and
            ``total_timeout_secs`` (default 30), seconds; ``proxy_url`` and ``ca_file``
            (default None).
        """
        return {
            "timeout_secs": float(options.get("timeout_secs", DEFAULT_TIMEOUT_SECS)),
            "connect_timeout_secs": float(
                options.get("connect_timeout_secs", DEFAULT_CONNECT_TIMEOUT_SECS)
            ),
            "total_timeout_secs": float(
                options.get("total_timeout_secs", DEFAULT_TOTAL_TIMEOUT_SECS)
            ),
            "proxy_url": options.get("proxy_url"),
            "ca_file": options.get("ca_file"),
        }


SettingsT = TypeVar("SettingsT", bound=HttpSettings)


class HttpNotifier(Notifier, Generic[SettingsT]):
    """Base of notifiers that POST each payload over one :class:`HttpTransport`.

    A subclass declares its ``config_schema`` (:meth:`options_schema`), ``from_config``
    (its :class:`HttpSettings` subclass built with :meth:`HttpSettings.timeouts`),
    ``render`` and ``send``, which calls :meth:`post`; the transport and :meth:`close`
    come from here.

    Args:
        name: configured notifier name.
        settings: validated options.
        transport: HTTP transport (a new one when None).
    """

    def __init__(
        self, name: str, settings: SettingsT, transport: HttpTransport | None = None
    ) -> None:
        super().__init__(name)
        self.settings = settings
        self.transport = (
            transport
            if transport is not None
            else HttpTransport(
                name,
                total_timeout_secs=settings.total_timeout_secs,
                proxy_url=settings.proxy_url,
                ca_file=settings.ca_file,
            )
        )

    @staticmethod
    def options_schema(properties: Mapping[str, Any], required: Sequence[str]) -> dict[str, Any]:
        """Return the ``config_schema`` of an HTTP notifier: its own options, then the timeouts.

        Args:
            properties: JSON Schema of the type's own option keys, in the order shown.
            required: the own keys an entry must set.

        Returns:
            ``{"type": "object", "properties": {**properties, timeout_secs,
            connect_timeout_secs}, "required": [...]}`` (a new dict).
        """
        return {
            "type": "object",
            "properties": {**properties, **HTTP_TIMEOUT_PROPERTIES},
            "required": list(required),
        }

    def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> HttpReply:
        """POST ``body`` with the configured timeouts (:meth:`HttpTransport.post`).

        Args:
            url: destination URL (may contain a token; never logged).
            body: the exact bytes to send, UTF-8 JSON.
            headers: extra request headers (none when None).

        Returns:
            The 2xx reply.

        Raises:
            NotifyError: non-2xx status, timeout or connection problem (see module docs).
        """
        return self.transport.post(
            url,
            body,
            headers={} if headers is None else headers,
            connect_timeout_secs=self.settings.connect_timeout_secs,
            read_timeout_secs=self.settings.timeout_secs,
        )

    def close(self) -> None:
        """Close the HTTP session."""
        self.transport.close()
