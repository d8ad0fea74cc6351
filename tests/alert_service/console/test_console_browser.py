"""The console in a real headless Chromium (Debian's package) against a running
service: create a silence, retry a dead letter, and see the status change."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers.alert_ops import (
    append_lines,
    receiver,
    result_line,
    service,
    wait_until,
    write_config,
)
from tests.helpers.browser import chromium

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='img'\">"
CONSOLE = "metrics: {listen_address: 127.0.0.1, port: 0}\nconsole: {enabled: true}\n"


def cell(driver: Any, css: str) -> str:
    """The text of the element ``css``, waiting for the page that has it (after a click
    the next page may still be loading)."""
    found = WebDriverWait(driver, 30).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
    )
    return str(found.text)


def counts(driver: Any, base: str) -> dict[str, str]:
    """The status page's counts of notifier ``hook``, read again from the server."""
    driver.get(base + "/console/")
    row = driver.find_element(By.CSS_SELECTOR, 'tr[data-notifier="hook"]')
    return {
        state: row.find_element(By.CSS_SELECTOR, f"td.count-{state}").text
        for state in ("pending", "sent", "dead", "silenced")
    }


@pytest.mark.timeout(1200)  # a fresh CI machine first installs chromium with apt-get
def test_console_in_chromium_silence_retry_and_status(tmp_path: Path) -> None:
    with receiver() as rx:
        config = write_config(tmp_path, rx.base + "/hoook", extra=CONSOLE)
        log = tmp_path / "results.log"
        append_lines(log, [result_line(1, cmdline=HOSTILE), result_line(2)])
        with service(config, tmp_path / "run.log") as svc, chromium(tmp_path / "profile") as b:
            svc.wait_event("notify_dead_lettered", 2)
            (listening,) = svc.wait_event("ops_listening")
            base = f"http://127.0.0.1:{listening['port']}"
            assert counts(b, base) == {"pending": "0", "sent": "0", "dead": "2", "silenced": "0"}

            # The hostile command line is shown as text and runs nothing.
            b.get(base + "/console/alerts")
            b.find_element(By.CSS_SELECTOR, "tr.row:last-child td a").click()
            assert HOSTILE.replace('"', '\\"') in cell(b, "#alert")
            assert b.title.startswith("Alert row")
            assert not b.find_elements(By.CSS_SELECTOR, "#alert img, #alert script")

            # Create a silence through the form.
            b.get(base + "/console/silences")
            b.find_element(By.ID, "host").send_keys("web-09")
            b.find_element(By.ID, "comment").send_keys("browser test <b>maintenance</b>")
            b.find_element(By.ID, "add").click()
            assert cell(b, "#done") == "silence 1 added"
            assert cell(b, 'tr.silence[data-id="1"] td.comment') == (
                "browser test <b>maintenance</b>"
            )

            # Fix the URL, reload, retry one dead letter from its button.
            write_config(tmp_path, rx.url, extra=CONSOLE)
            svc.signal(signal.SIGHUP)
            svc.wait_event("config_reloaded")
            b.get(base + "/console/dead")
            buttons = b.find_elements(By.CSS_SELECTOR, "button.retry")
            assert len(buttons) == 2
            buttons[0].click()
            assert cell(b, "#done") == "queued again: 1"
            svc.wait_event("notify_sent")
            wait_until(lambda: counts(b, base)["sent"] == "1")
            assert counts(b, base) == {"pending": "0", "sent": "1", "dead": "1", "silenced": "0"}

            # Retry the rest; then an alert of the silenced host is held back.
            b.get(base + "/console/dead")
            b.find_element(By.ID, "retry-all").click()
            assert cell(b, "#done") == "queued again: 1"
            append_lines(log, [result_line(3, host="web-09")])
            svc.wait_event("notify_silenced")
            wait_until(lambda: counts(b, base)["sent"] == "2")
            assert counts(b, base) == {"pending": "0", "sent": "2", "dead": "0", "silenced": "1"}
            assert "browser test <b>maintenance</b>" in cell(b, "#silences")

            # Expire the silence from the list.
            b.get(base + "/console/silences")
            b.find_element(By.ID, "expire-1").click()
            assert cell(b, "#done") == "silence 1 expired"
            row = b.find_element(By.CSS_SELECTOR, 'tr.silence[data-id="1"]')
            assert row.get_attribute("data-active") == "no"
            b.get(base + "/console/")
            assert cell(b, "#silences") == "none"
            assert b.title == "Status · tracked-connections alerts"
        assert sorted(rx.accepted_ids().values()) == [1, 1]
