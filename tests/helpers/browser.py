"""Headless Chromium from Debian's packages, driven by Selenium through chromedriver.

:func:`chromium_paths` finds ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``;
when they are missing and the tests run as root it installs the Debian packages
``chromium`` and ``chromium-driver`` with apt-get. Where they still cannot be had the
test is skipped with the reason — except with ``CI=true``, where it fails: CI must
run the browser test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def _present() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test required in CI: {reason}")
    pytest.skip(reason)


def chromium_paths() -> tuple[str, str]:
    """``(chromium, chromedriver)``, installing the Debian packages when needed."""
    if _present():
        return CHROMIUM, CHROMEDRIVER
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable(
            "needs /usr/bin/chromium and /usr/bin/chromedriver"
            " (apt-get install chromium chromium-driver, as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
    ):
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            _unavailable(f"{' '.join(args)} failed: {done.stderr[-500:]}")
    if not _present():
        _unavailable("apt-get installed chromium but /usr/bin/chromium(driver) is missing")
    return CHROMIUM, CHROMEDRIVER


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A Selenium Chrome driver on headless Chromium with a fresh profile ``profile``."""
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()
