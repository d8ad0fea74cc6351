"""Fixtures for the osqueryd stand-in tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standin_helpers import Clock

from osqueryd_standin import Standin


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory under /tmp (UNIX socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_standin(workdir: Path, clock: Clock) -> Iterator[Callable[..., Standin]]:
    """Factory for started stand-ins (stopped at teardown)."""
    made: list[Standin] = []

    def factory(**kwargs: Any) -> Standin:
        options: dict[str, Any] = {
            "host_identifier": "web-01",
            "extensions_interval_secs": 1,
            "extensions_timeout_secs": 3,
            "run_scheduler": False,
            "clock": clock,
            "shutdown_grace_secs": 3.0,
            "kill_grace_secs": 3.0,
        }
        options.update(kwargs)
        osqd = Standin(str(workdir / "osquery.em"), workdir / "logs", **options)
        osqd.start()
        made.append(osqd)
        return osqd

    yield factory
    for osqd in made:
        osqd.stop()
