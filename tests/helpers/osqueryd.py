"""The osqueryd stand-in with our extension launched as a subprocess."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from osqueryd_standin import Standin

EXTENSION_CMD = [sys.executable, "-m", "extension"]
ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "packs" / "tracked_connections.conf"


@contextmanager
def short_tmpdir() -> Iterator[Path]:
    """A directory under /tmp: UNIX socket paths are limited to about 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="tc", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def standin_with_extension(
    workdir: Path,
    *extension_args: str,
    launcher: Sequence[str] = (),
    **standin_options: Any,
) -> Iterator[Standin]:
    """A started stand-in that has launched the extension and sees its table.

    Args:
        workdir: short directory for the socket and the logs.
        extension_args: our own extension options, e.g. "--sample-interval-ms", "100".
        launcher: a command the extension runs under, e.g. ``setpriv ... --``.
        standin_options: passed to :class:`Standin`.
    """
    options: dict[str, Any] = {
        "host_identifier": "test-host",
        "extensions_interval_secs": 1,
        "extensions_timeout_secs": 5,
        "run_scheduler": False,
        "shutdown_grace_secs": 3.0,
        "kill_grace_secs": 3.0,
        "ephemeral": True,
    }
    options.update(standin_options)
    osqd = Standin(str(workdir / "osquery.em"), workdir / "logs", **options)
    osqd.start()
    try:
        if "--state-file" not in extension_args:
            # Never the host's default file: tests must not share saved rows.
            extension_args = (*extension_args, "--state-file", str(workdir / "extension.state"))
        osqd.launch_extension([*launcher, *EXTENSION_CMD, *extension_args])
        osqd.wait_for_table("tracked_connections", 20)
        yield osqd
    finally:
        osqd.stop()


def narrowed_pack(where: str) -> dict[str, Any]:
    """The shipped pack with its query narrowed by ``where`` (SQL), for busy hosts.

    The differential query then logs only what the test made, not every
    connection of every other process on the host.
    """
    pack: dict[str, Any] = json.loads(PACK.read_text(encoding="utf-8"))
    query = pack["queries"]["tracked_connections"]
    query["query"] = query["query"].replace(
        "FROM tracked_connections", f"FROM tracked_connections WHERE {where}"
    )
    return pack
