"""The web console over real HTTP against a running service: escaping of hostile
connection data, CSRF on every action, the token login, and the loopback rule."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

from tests.helpers.alert_ops import (
    Service,
    append_lines,
    cli,
    cli_json,
    receiver,
    result_line,
    service,
    write_config,
)
from tests.helpers.console_client import ConsoleClient

# Markup, and a right-to-left override that would make "exe.png" read "gnp.exe".
HOSTILE = (
    "<script>document.title='pwned'</script><img src=x onerror=alert(1)> \" ' &amp;"
    " invoice\u202egnp.exe"
)
CONSOLE = "metrics: {listen_address: 127.0.0.1, port: 0}\nconsole: {enabled: true}\n"


def console_port(svc: Service) -> int:
    (listening,) = svc.wait_event("ops_listening")
    assert "/console/" in listening["paths"]  # type: ignore[operator]
    return int(listening["port"])  # type: ignore[call-overload]


def test_pages_escape_hostile_connection_data(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.base + "/hoook", extra=CONSOLE)
        append_lines(
            tmp_path / "results.log",
            [result_line(1, cmdline=HOSTILE, name="<b>nc</b>", host="<i>web</i>")],
        )
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_dead_lettered")
            client = ConsoleClient(f"http://127.0.0.1:{console_port(svc)}")
            (row,) = cli_json("outbox", "list", "--config", str(config))
            pages = {
                path: client.request(path)
                for path in (
                    "/console/",
                    "/console/alerts",
                    "/console/dead",
                    f"/console/alerts/{row['id']}",
                    "/console/alerts?host=%3Ci%3Eweb%3C%2Fi%3E",
                )
            }
            for path, page in pages.items():
                assert page.status == 200, (path, page.text)
                assert "script-src" not in page.headers["Content-Security-Policy"]
                assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
                assert "<script" not in page.text, path
                assert "<img" not in page.text, path
                assert "<i>web</i>" not in page.text, path
                assert "\u202e" not in page.text, path
            detail = pages[f"/console/alerts/{row['id']}"].text
            # The value is shown, escaped (inside JSON in <pre>: quotes stay JSON-escaped).
            assert "&lt;script&gt;document.title=" in detail
            assert "<script>document.title='pwned'</script>" in html.unescape(detail)
            assert "&lt;b&gt;nc&lt;/b&gt;" in detail
            assert "invoice\\u202Egnp.exe" in detail
            assert "&lt;i&gt;web&lt;/i&gt;" in pages["/console/alerts"].text
            filtered = pages["/console/alerts?host=%3Ci%3Eweb%3C%2Fi%3E"].text
            assert f'data-id="{row["id"]}"' in filtered
            assert 'value="&lt;i&gt;web&lt;/i&gt;"' in filtered
            assert client.request("/console/alerts/999999").status == 404


def test_every_action_needs_the_csrf_token_and_this_origin(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.base + "/hoook", extra=CONSOLE)
        append_lines(tmp_path / "results.log", [result_line(1)])
        with service(config, tmp_path / "run.log") as svc:
            svc.wait_event("notify_dead_lettered")
            base = f"http://127.0.0.1:{console_port(svc)}"
            client = ConsoleClient(base)
            csrf = client.request("/console/silences").csrf()
            actions: list[tuple[str, dict[str, str | list[str]]]] = [
                ("/console/retry", {"all_dead": "1"}),
                ("/console/silences", {"duration": "1h", "rule": "r", "comment": "c"}),
                ("/console/silences/1/expire", {}),
            ]
            for path, form in actions:
                assert client.request(path, form).status == 403, path  # no field
                bad = {**form, "csrf": "0" * 64}
                assert client.request(path, bad).status == 403, path
                # A fresh client has no cookie: the field of another browser is useless.
                assert ConsoleClient(base).request(path, {**form, "csrf": csrf}).status == 403
                other = {"Origin": "http://evil.example"}
                assert client.request(path, {**form, "csrf": csrf}, other).status == 403
            assert cli_json("silence", "list", "--config", str(config)) == []
            assert len(cli_json("outbox", "list", "--state", "dead", "--config", str(config))) == 1

            done = client.request(
                "/console/silences",
                {"duration": "1h", "rule": "r", "comment": "c", "csrf": csrf},
                {"Origin": base},
            )
            assert (done.status, done.headers["Location"]) == (
                303,
                "/console/silences?done=silence+1+added",
            )
            assert [s["id"] for s in cli_json("silence", "list", "--config", str(config))] == [1]
            done = client.request("/console/retry", {"all_dead": "1", "csrf": csrf})
            assert done.headers["Location"] == "/console/dead?done=queued+again%3A+1"


def test_a_token_protects_the_console(tmp_path: Path) -> None:
    token_file = tmp_path / "console.token"
    token_file.write_text("s3cret-console-token\n", encoding="utf-8")
    extra = (
        "metrics: {listen_address: 127.0.0.1, port: 0}\n"
        f"console: {{enabled: true, token: {{file: {token_file}}}}}\n"
    )
    with receiver() as rx:
        config = write_config(tmp_path, rx.url, extra=extra)
        with service(config, tmp_path / "run.log") as svc:
            base = f"http://127.0.0.1:{console_port(svc)}"
            client = ConsoleClient(base)
            first = client.request("/console/")
            assert (first.status, first.headers["Location"]) == (303, "/console/login")
            assert client.request("/console/retry", {"all_dead": "1"}).status == 401
            bearer = {"Authorization": "Bearer s3cret-console-token"}
            assert client.request("/console/", headers=bearer).status == 200
            wrong = {"Authorization": "Bearer nope"}
            assert client.request("/console/", headers=wrong).status == 303

            login = client.request("/console/login")
            assert login.status == 200
            csrf = login.csrf()
            refused = client.request("/console/login", {"token": "nope", "csrf": csrf})
            assert refused.headers["Location"] == "/console/login?error=wrong+token"
            assert client.request("/console/").status == 303
            ok = client.request("/console/login", {"token": "s3cret-console-token", "csrf": csrf})
            assert (ok.status, ok.headers["Location"]) == (303, "/console/")
            assert "HttpOnly" in ok.headers["Set-Cookie"]
            assert "SameSite=Strict" in ok.headers["Set-Cookie"]
            page = client.request("/console/")
            assert page.status == 200
            assert "s3cret-console-token" not in page.text
            # /metrics and /health stay as they were.
            assert client.request("/health").status == 200


def test_a_console_without_a_token_must_listen_on_loopback(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "http://127.0.0.1:9/hook",
        extra="metrics: {listen_address: 0.0.0.0, port: 0}\nconsole: {enabled: true}\n",
    )
    done = cli("check-config", str(config))
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"{config}: $.console.token: required: the ops port listens on 0.0.0.0, not loopback"
    )
    os.environ.pop("TC_CONSOLE_TOKEN", None)
    env_config = write_config(
        tmp_path,
        "http://127.0.0.1:9/hook",
        extra="console: {enabled: true, token: {env: TC_CONSOLE_TOKEN}}\n",
        name="env.yaml",
    )
    done = cli("check-config", str(env_config))
    assert done.returncode == 1
    assert re.search(r"\$\.console\.token: environment variable TC_CONSOLE_TOKEN", done.stderr)
