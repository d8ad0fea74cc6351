"""A small HTTP client for console tests: keeps cookies, reads the CSRF field."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.cookiejar import CookieJar


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([0-9a-f]+)"', self.text)
        assert match, self.text[:500]
        return match.group(1)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class ConsoleClient:
    """GET and POST against ``base`` (``http://127.0.0.1:PORT``) with a cookie jar."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self,
        path: str,
        form: dict[str, str | list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = None
        hdrs = dict(headers or {})
        if form is not None:
            data = urllib.parse.urlencode(form, doseq=True).encode()
            hdrs.setdefault("Content-Type", "application/x-www-form-urlencoded")
        req = urllib.request.Request(self.base + path, data=data, headers=hdrs)
        try:
            with self.opener.open(req, timeout=10) as resp:
                return Reply(resp.status, dict(resp.headers.items()), resp.read().decode())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers.items()), err.read().decode())
