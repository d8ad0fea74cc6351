"""The one-line summary every notifier uses."""

from __future__ import annotations

from deliver_support import make_alert

from alert_service.notify.format import facts, summary_line


def test_outbound_connection_summary() -> None:
    line = summary_line(facts(make_alert(rule="c2")))
    assert line == (
        "[c2] web-01.example.com: nc (pid 901, root) opened tcp connection to 198.51.100.7:4444"
    )


def test_listener_summary_names_the_local_endpoint() -> None:
    alert = make_alert(
        rule="unexpected-listener", direction="listening", local_address="0.0.0.0",
        local_port=31337, remote_address="", remote_port=0, community_id="<drop>",
    )  # fmt: skip
    assert summary_line(facts(alert)) == (
        "[unexpected-listener] web-01.example.com: nc (pid 901, root) "
        "started listening on tcp 0.0.0.0:31337"
    )
    closed = make_alert(
        rule="l", action="removed", direction="listening", local_address="::",
        local_port=22, remote_address="", remote_port=0,
    )  # fmt: skip
    assert summary_line(facts(closed)).endswith("stopped listening on tcp [::]:22")


def test_the_remote_name_stands_beside_the_address() -> None:
    named = make_alert(rule="c2", remote_hostname="api.evil.example",
                       remote_hostname_source="process")  # fmt: skip
    assert summary_line(facts(named)) == (
        "[c2] web-01.example.com: nc (pid 901, root) opened tcp connection to 198.51.100.7:4444"
        " (api.evil.example)"
    )
    guessed = make_alert(remote_hostname="api.evil.example", remote_hostname_source="host")
    assert facts(guessed).remote_name == "api.evil.example, a host-wide guess"
    assert summary_line(facts(guessed)).endswith(
        "198.51.100.7:4444 (api.evil.example, a host-wide guess)"
    )
    unnamed = facts(make_alert(remote_hostname="", remote_hostname_source="<drop>"))
    assert unnamed.remote_name == ""
    assert summary_line(unnamed).endswith("198.51.100.7:4444")
