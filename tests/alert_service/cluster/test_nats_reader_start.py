"""The NATS reader process imports only what it uses (its start is paid at every
start and restart of a reader, and counts in the CPU per line of short runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_the_reader_does_not_import_the_file_sources_or_the_notifiers() -> None:
    probe = (
        "import sys, json\n"
        "import alert_service.source.nats_reader\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('alert_service'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         check=True, text=True).stdout
    loaded = set(json.loads(out))
    assert "alert_service.source.nats_reader" in loaded
    for heavy in ("alert_service.source.follower", "alert_service.source.manager",
                  "alert_service.source.config", "alert_service.notify",
                  "alert_service.match", "alert_service.parse"):
        assert heavy not in loaded, heavy


def test_the_source_package_still_exports_its_names() -> None:
    from alert_service import source  # noqa: PLC0415

    for name in source.__all__:
        assert getattr(source, name) is not None, name
    from alert_service.source import FileSources, LineChunk  # noqa: PLC0415

    assert FileSources.__module__ == "alert_service.source.manager"
    assert LineChunk.__module__ == "alert_service.source.records"
