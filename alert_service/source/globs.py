"""Expand a ``glob`` source into the live logs it names.

A glob such as ``/var/log/fleet/*/osquery_result`` may name several live logs; each is
followed (and checkpointed) on its own. Rotated and compressed siblings are never
followed live — they are read through their live log's rotation handling — so names
that look rotated are left out: a glob matching rotated names would read their lines
twice.
"""

from __future__ import annotations

import glob
import os
import re

from alert_service.source.rotation import is_rotated_name

__all__ = ["expand_glob", "glob_base_error"]

_MAGIC = re.compile(r"[*?[]")


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


def glob_base_error(pattern: str) -> OSError | None:
    """Why the directory a glob starts from cannot be listed, or None when it can.

    :func:`glob.glob` returns nothing, silently, for a directory it may not read; this
    tells "no file matches" from "cannot look".

    Args:
        pattern: the glob; its leading directories without ``*``, ``?`` or ``[`` are
            the base (``/var/log/fleet`` for ``/var/log/fleet/*/osquery_result``).

    Returns:
        The ``OSError`` of listing the base (``FileNotFoundError``,
        ``PermissionError``...), or None.
    """
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    base = os.sep.join(fixed) or (os.sep if pattern.startswith(os.sep) else ".")
    try:
        with os.scandir(base) as entries:
            next(entries, None)
    except OSError as err:
        return err
    return None
