"""No file in the repository keeps a merge's conflict markers (a doc shipped by `init`
with them reads as garbage to a user)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_tracked_file_has_conflict_markers() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    marked = []
    for name in filter(None, listed):
        path = REPO / name.decode()
        if path.is_file() and MARKER.search(path.read_bytes()):
            marked.append(name.decode())
    assert marked == []
