"""Helpers for the osqueryd stand-in tests (imported by conftest and tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osqueryd_standin import Standin

FAKE_EXTENSION = Path(__file__).with_name("fake_extension.py")
FIXED_TIME = 1756796709  # Tue Sep  2 07:05:09 2025 UTC


class Clock:
    """A settable clock for result-line timestamps."""

    def __init__(self, now: float = FIXED_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeExtension:
    """Drives tests/standin/fake_extension.py through files."""

    def __init__(
        self,
        workdir: Path,
        name: str = "fake_ext",
        table: str = "fake_table",
        columns: list[list[str]] | None = None,
    ) -> None:
        self.name = name
        self.table = table
        self.columns = columns
        self.rows_path = workdir / f"{name}.rows.json"
        self.trace_path = workdir / f"{name}.trace.jsonl"
        self.set_rows([])

    def set_rows(self, rows: Any) -> None:
        tmp = self.rows_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows), encoding="utf-8")
        os.replace(tmp, self.rows_path)

    def env(self) -> dict[str, str]:
        env = {
            "FAKE_EXT_NAME": self.name,
            "FAKE_EXT_TABLE": self.table,
            "FAKE_EXT_ROWS": str(self.rows_path),
            "FAKE_EXT_TRACE": str(self.trace_path),
        }
        if self.columns is not None:
            env["FAKE_EXT_COLUMNS"] = json.dumps(self.columns)
        return env

    def command(self) -> list[str]:
        return [sys.executable, str(FAKE_EXTENSION)]

    def launch(self, osqd: Standin, timeout_secs: float = 15) -> subprocess.Popen[bytes]:
        child = osqd.launch_extension(self.command(), extra_env=self.env())
        osqd.wait_for_table(self.table, timeout_secs)
        return child

    def trace(self) -> list[dict[str, Any]]:
        if not self.trace_path.exists():
            return []
        lines = self.trace_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    def requests(self) -> list[dict[str, str]]:
        return [r["request"] for r in self.trace() if "request" in r]


def wait_until(predicate: Callable[[], bool], timeout_secs: float, step: float = 0.05) -> bool:
    """Poll until predicate() is true or the timeout passes."""
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
