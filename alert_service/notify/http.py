"""Shared HTTP transport of notifiers: JSON POST with timeouts and status mapping.

The one place where :mod:`requests` errors become
:class:`~alert_service.errors.NotifyError` (alerting-delivery-and-tailing.md §2.7):

* any 2xx → success;
* 408, 425, 429 and 5xx → retryable, with ``Retry-After`` (seconds or HTTP date) kept;
* timeouts and connection errors → retryable;
* redirects (not followed: a POST must not silently turn into a GET) and other 4xx →
  not retryable.

Messages carry the notifier name and status, never the URL or headers (they may hold
tokens).
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any, Final

import requests

from alert_service import __version__
from alert_service.errors import NotifyError

__all__ = ["USER_AGENT", "HttpTransport", "encode_json", "parse_retry_after"]

USER_AGENT: Final = f"tracked-connections-alerts/{__version__}"
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
_BODY_SNIPPET_CHARS: Final = 200


def encode_json(payload: Mapping[str, Any]) -> bytes:
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
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _snippet(resp: requests.Response) -> str:
    try:
        text = resp.text[:_BODY_SNIPPET_CHARS]
    except (UnicodeDecodeError, LookupError):  # pragma: no cover - defensive
        return ""
    return "".join(ch if ch.isprintable() else " " for ch in text).strip()


class HttpTransport:
    """POST JSON bodies for one notifier over a pooled :class:`requests.Session`.

    Args:
        notifier: notifier name, used in error messages.
        session: session to use (a new one when None); closed by :meth:`close`.
    """

    def __init__(self, notifier: str, session: requests.Session | None = None) -> None:
        self.notifier = notifier
        self.session = session if session is not None else requests.Session()

    def post_json(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, str],
        connect_timeout_secs: float,
        read_timeout_secs: float,
    ) -> int:
        """POST ``payload`` as ``application/json`` and check the status.

        Args:
            url: destination URL (may contain a token; never logged).
            payload: JSON-serialisable mapping.
            headers: extra request headers; ``Content-Type`` and ``User-Agent`` are set
                unless given here.
            connect_timeout_secs: TCP connect timeout, seconds.
            read_timeout_secs: timeout between bytes of the response, seconds.

        Returns:
            The 2xx status code.

        Raises:
            NotifyError: non-2xx status, timeout or connection problem (see module docs).
        """
        body = encode_json(payload)
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            **headers,
        }
        name = self.notifier
        try:
            with self.session.post(
                url,
                data=body,
                headers=all_headers,
                timeout=(connect_timeout_secs, read_timeout_secs),
                allow_redirects=False,
            ) as resp:
                status = resp.status_code
                if 200 <= status < 300:
                    return status
                retryable = status in _RETRYABLE_STATUS or 500 <= status < 600
                detail = _snippet(resp)
                raise NotifyError(
                    f"{name}: HTTP {status} {resp.reason or ''}".rstrip()
                    + (f": {detail}" if detail else ""),
                    retryable=retryable,
                    retry_after_secs=parse_retry_after(resp.headers.get("Retry-After"))
                    if retryable
                    else None,
                    error_type="http_status",
                )
        except requests.Timeout as err:
            raise NotifyError(f"{name}: timed out", retryable=True, error_type="timeout") from err
        except requests.ConnectionError as err:
            raise NotifyError(
                f"{name}: connection failed ({type(err).__name__})",
                retryable=True,
                error_type="connection",
            ) from err
        except requests.RequestException as err:
            raise NotifyError(
                f"{name}: request failed ({type(err).__name__})",
                retryable=False,
                error_type="request",
            ) from err

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()
