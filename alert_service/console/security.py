"""Login and CSRF protection of the console.

* **Login** (when a token is configured): the login form takes the token once and
  sets a session cookie holding ``HMAC-SHA256(process key, "session")``; API clients
  may send ``Authorization: Bearer <token>`` instead. Without a token (loopback only)
  every request is let in.
* **CSRF**: every state-changing request is a POST carrying a form field ``csrf``
  equal to ``HMAC-SHA256(process key, c)`` where ``c`` is the random value of the
  ``tc_console_csrf`` cookie (a signed double-submit cookie), and, when the browser
  sends ``Origin``, it must be this server. Cookies are ``HttpOnly`` and
  ``SameSite=Strict``. See the OWASP Cross-Site Request Forgery Prevention Cheat Sheet,
  "Signed Double-Submit Cookie", https://cheatsheetseries.owasp.org/cheatsheets/Cross-Site_Request_Forgery_Prevention_Cheat_Sheet.html

The process key is random per process: a restart logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie

__all__ = ["CSRF_COOKIE", "SESSION_COOKIE", "Guard", "read_cookies"]

CSRF_COOKIE = "tc_console_csrf"
SESSION_COOKIE = "tc_console_session"


def read_cookies(header: str) -> dict[str, str]:
    """Cookie name → value of a ``Cookie`` header (malformed → empty)."""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def cookie_header(name: str, value: str, path: str) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, scoped to ``path``."""
    return f"{name}={value}; Path={path}; HttpOnly; SameSite=Strict"


class Guard:
    """Checks logins and CSRF tokens with one random key per process.

    Args:
        token: the console token, or None when no login is needed.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._key = secrets.token_bytes(32)

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """The value of the session cookie a login sets."""
        return self._mac("session")

    def token_matches(self, given: str) -> bool:
        """True when ``given`` is the configured token (constant-time)."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8"))

    def authenticated(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """True without a token, or with the session cookie or a bearer token."""
        if self.token is None:
            return True
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and self.token_matches(auth[7:].strip()):
            return True
        session = cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(session, self.session_value())

    @staticmethod
    def new_csrf_cookie() -> str:
        """A fresh random value for the CSRF cookie."""
        return secrets.token_hex(16)

    def csrf_field(self, cookie: str) -> str:
        """The form field value that goes with CSRF cookie ``cookie``."""
        return self._mac("csrf:" + cookie)

    def csrf_ok(self, cookie: str, field: str) -> bool:
        """True when ``field`` is the signature of a non-empty ``cookie``."""
        if not cookie or not field:
            return False
        return hmac.compare_digest(field, self.csrf_field(cookie))

    @staticmethod
    def origin_ok(headers: Mapping[str, str]) -> bool:
        """True when there is no ``Origin`` header or it names this server's host."""
        origin = headers.get("origin")
        if origin is None:
            return True
        host = headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")
