"""Expand a ``glob`` source into the live logs it names.

A glob such as ``/var/log/fleet/*/osquery_result`` may name several live logs; each is
followed (and checkpointed) on its own. Rotated and compressed siblings are never
followed live — they are read through their live log's rotation handling — so names
that look rotated are left out (alerting-delivery-and-tailing.md §4.1: a glob matching
rotated names duplicates data).
"""

from __future__ import annotations

import glob
import os

from alert_service.source.rotation import is_rotated_name

__all__ = ["expand_glob"]


def expand_glob(pattern: str) -> list[str]:
    """Return the regular files matching ``pattern`` that are not rotated names, sorted.

    Args:
        pattern: a :mod:`glob` pattern (``*``, ``?``, ``[...]``; ``**`` recursive).
    """
    out: list[str] = []
    for path in glob.glob(pattern, recursive=True):
        if is_rotated_name(path) or not os.path.isfile(path):
            continue
        out.append(path)
    return sorted(out)
