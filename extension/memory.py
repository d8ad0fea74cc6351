"""Allocator settings that keep the extension's resident memory flat.

A ``generate`` reply is one bytes object of a few MiB, built and freed on a
server thread for every query. With glibc's defaults each such thread may
get an arena of its own (up to eight per core), and the threshold above
which a block is mapped on its own (and so returned to the kernel when
freed) grows to the size of the largest block freed, up to 32 MiB: after the
first replies, their memory stays resident. Two arenas and a fixed 1 MiB
threshold keep it from piling up (mallopt(3); glibc malloc/malloc.c,
``M_ARENA_MAX`` -8, ``M_MMAP_THRESHOLD`` -3; setting the threshold turns off
its growth).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Final

__all__ = ["tune_allocator"]

log = logging.getLogger(__name__)

M_ARENA_MAX: Final = -8
M_MMAP_THRESHOLD: Final = -3
ARENAS: Final = 2
MMAP_THRESHOLD_BYTES: Final = 1 << 20


def tune_allocator() -> bool:
    """Apply the settings where the C library is glibc (Linux); elsewhere do nothing.

    Returns:
        True when both settings were taken.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    taken = bool(mallopt(M_ARENA_MAX, ARENAS)) and bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    )
    if not taken:
        log.debug("the C library refused the allocator settings")
    return taken
