"""IOC list files: addresses and CIDRs loaded from files and reloaded when they change.

Format (one entry per line, UTF-8)::

    # comment line
    198.51.100.7            # a single address; text after '#' is a comment
    203.0.113.0/24
    2001:db8:bad::/48
    ::ffff:192.0.2.0/120    # IPv4-mapped networks become IPv4 networks

Blank lines are ignored. A line that is not an address or a CIDR with zero host bits
makes the whole file invalid, with its line number in the message.

Entries become sorted, merged integer ranges, one :class:`~alert_service.match.ranges.IntRanges`
per address family, so a lookup is one ``bisect`` whatever the list size
(benchmarks/match_bench.py measures 100k entries).

Reloading (:meth:`IocList.check`): the file's (device, inode, size, mtime) is compared
with the loaded version's; when it differs the file is parsed again. A file that fails
to read or parse keeps the previous list in use and is logged once per version
(``ioc_reload_failed``); a good new version is logged as ``ioc_reloaded``.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from alert_service.errors import MatchError
from alert_service.logs import log_event
from alert_service.match.addresses import IPV6_OFFSET, network_span
from alert_service.match.ranges import IntRanges

__all__ = ["IocFiles", "IocList", "IocVersion", "Reloadable", "load_ioc_file", "parse_ioc_lines"]

_log = logging.getLogger(__name__)

# The last good parse of each path, so the config check and the rule set (and several
# rules naming one file) parse a file once per version.
_CACHE: dict[str, tuple[IocVersion, IntRanges, IntRanges, int]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class IocVersion:
    """What identifies one version of a file: ``(st_dev, st_ino, st_size, st_mtime_ns)``."""

    dev: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> IocVersion:
        """Return the version of a ``stat()`` result."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True, slots=True)
class _Loaded:
    version: IocVersion | None
    entries: int
    v4: IntRanges
    v6: IntRanges


def parse_ioc_lines(
    lines: Iterable[str], source: str = "<ioc>"
) -> tuple[IntRanges, IntRanges, int]:
    """Parse IOC lines (see the module docs).

    Args:
        lines: the file's lines, with or without line ends.
        source: file name used in error messages.

    Returns:
        ``(ipv4_ranges, ipv6_ranges, entries)``; ``entries`` counts the address/CIDR lines.

    Raises:
        MatchError: a line is not an address or CIDR (message ``FILE: line N: ...``).
    """
    v4: list[tuple[int, int]] = []
    v6: list[tuple[int, int]] = []
    entries = 0
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            version, first, last = network_span(text)
        except MatchError as err:
            raise MatchError(f"{source}: line {number}: {err}") from err
        (v4 if version == 4 else v6).append((first, last))
        entries += 1
    return IntRanges(v4), IntRanges(v6), entries


def load_ioc_file(path: str) -> tuple[IocVersion, IntRanges, IntRanges, int]:
    """Read and parse one IOC file.

    Returns:
        ``(version, ipv4_ranges, ipv6_ranges, entries)``; the version is the one of the
        open file, so a file replaced while being read is read again on the next check.
        The last good parse of each path is reused while its version is unchanged.

    Raises:
        MatchError: the file cannot be read (a path with a NUL byte included), is
            not UTF-8, or has a bad line; or ``path`` is not a string (never taken
            as a file descriptor).
    """
    if not isinstance(path, str):
        raise MatchError(f"IOC file {path!r} is not a path")
    try:
        with open(path, encoding="utf-8") as fh:
            version = IocVersion.of(os.fstat(fh.fileno()))
            with _CACHE_LOCK:
                cached = _CACHE.get(path)
            if cached is not None and cached[0] == version:
                return cached
            v4, v6, entries = parse_ioc_lines(fh, path)
    except OSError as err:
        raise MatchError(f"cannot read IOC file {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise MatchError(f"IOC file {path} is not UTF-8 text: {err.reason}") from err
    except ValueError as err:  # open() refuses a path with a NUL byte
        raise MatchError(f"cannot read IOC file {path!r}: {err}") from err
    result = (version, v4, v6, entries)
    with _CACHE_LOCK:
        _CACHE[path] = result
    return result


class IocList:
    """One IOC file in use by rules; membership test plus change detection.

    Args:
        path: the file.

    Raises:
        MatchError: the file cannot be loaded at start (a later failure keeps the old list).
    """

    __slots__ = ("_failed", "_loaded", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        version, v4, v6, entries = load_ioc_file(path)
        self._loaded = _Loaded(version, entries, v4, v6)
        self._failed: IocVersion | str | None = None

    @property
    def entries(self) -> int:
        """Address/CIDR lines of the version in use."""
        return self._loaded.entries

    @property
    def version(self) -> IocVersion | None:
        """The version in use."""
        return self._loaded.version

    def __len__(self) -> int:
        """Merged ranges of the version in use (both families)."""
        return len(self._loaded.v4) + len(self._loaded.v6)

    def __contains__(self, addr: object) -> bool:
        if not isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        loaded = self._loaded
        return int(addr) in (loaded.v4 if addr.version == 4 else loaded.v6)

    def contains_int(self, version: int, value: int) -> bool:
        """Return True when the address ``value`` of IP ``version`` (4 or 6) is listed."""
        loaded = self._loaded
        return value in (loaded.v4 if version == 4 else loaded.v6)

    def contains_number(self, number: int) -> bool:
        """Return True when the address number ``number`` is listed.

        Args:
            number: an address number
                (:func:`~alert_service.match.addresses.address_number`): an IPv4 value,
                or :data:`~alert_service.match.addresses.IPV6_OFFSET` plus an IPv6 value.
        """
        loaded = self._loaded
        if number >= IPV6_OFFSET:
            return loaded.v6.contains(number - IPV6_OFFSET)
        return loaded.v4.contains(number)

    def spans(self) -> list[tuple[int, int]]:
        """The version in use as merged inclusive ranges of address numbers
        (:func:`~alert_service.match.addresses.address_number`), ascending."""
        loaded = self._loaded
        return loaded.v4.spans() + [
            (start + IPV6_OFFSET, end + IPV6_OFFSET) for start, end in loaded.v6.spans()
        ]

    def check(self) -> bool:
        """Reload the file if its (device, inode, size, mtime) changed.

        Returns:
            True when a new version was loaded. A missing, unreadable or invalid file
            keeps the current list and is logged once until the file changes again.
        """
        try:
            st = os.stat(self.path)
        except OSError as err:
            marker = f"stat:{err.errno}"
            if self._failed != marker:
                self._failed = marker
                log_event(
                    _log,
                    logging.WARNING,
                    "ioc_reload_failed",
                    path=self.path,
                    reason=f"cannot stat: {err.strerror or err}",
                    entries_kept=self.entries,
                )
            return False
        current = IocVersion.of(st)
        if current in (self._loaded.version, self._failed):
            return False
        try:
            version, v4, v6, entries = load_ioc_file(self.path)
        except MatchError as err:
            self._failed = current
            log_event(
                _log,
                logging.WARNING,
                "ioc_reload_failed",
                path=self.path,
                reason=str(err),
                entries_kept=self.entries,
            )
            return False
        self._loaded = _Loaded(version, entries, v4, v6)
        self._failed = None
        log_event(_log, logging.INFO, "ioc_reloaded", path=self.path, entries=entries)
        return True


class Reloadable(Protocol):
    """A list loaded from a file that :meth:`IocFiles.check` reloads when it changes
    (e.g. :class:`~alert_service.match.domains.DomainList`)."""

    def check(self) -> bool:
        """Reload when the file changed; True when a new version was loaded."""
        ...


_R = TypeVar("_R", bound=Reloadable)


class IocFiles:
    """The IOC files of a rule set, each loaded once, checked at most every interval.

    Address lists come from :meth:`get`; lists of other kinds (domain lists) from
    :meth:`get_other`, checked with them.

    Args:
        check_interval_secs: least time between two checks of the files, seconds
            (0 checks on every :meth:`maybe_check`).
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self,
        check_interval_secs: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._lists: dict[str, IocList] = {}
        self._others: dict[tuple[Callable[[str], Reloadable], str], Reloadable] = {}
        self._interval = check_interval_secs
        self._clock = clock if clock is not None else time.monotonic
        self._next_check = self._clock() + check_interval_secs
        self._lock = threading.Lock()
        self.generation = 0
        """Raised by one each time a check loads a new version of any file: whoever
        built an index from the lists rebuilds it when the number it saw is old."""

    def get(self, path: str) -> IocList:
        """Return the list of ``path``, loading it the first time.

        Raises:
            MatchError: the file cannot be loaded.
        """
        found = self._lists.get(path)
        if found is None:
            found = self._lists[path] = IocList(path)
        return found

    def get_other(self, path: str, load: Callable[[str], _R]) -> _R:
        """Return the list ``load(path)`` made, loading it the first time (one per
        ``load`` and path); :meth:`check` checks it with the address lists.

        Raises:
            MatchError: as ``load`` does.
        """
        key = (cast(Callable[[str], Reloadable], load), path)
        found = self._others.get(key)
        if found is None:
            found = self._others[key] = load(path)
        return cast(_R, found)

    def lists(self) -> tuple[IocList, ...]:
        """Every loaded list."""
        return tuple(self._lists.values())

    def check(self) -> int:
        """Check every file now; return how many were reloaded."""
        with self._lock:
            self._next_check = self._clock() + self._interval
            reloaded = sum(1 for ioc in self._lists.values() if ioc.check())
            reloaded += sum(1 for other in self._others.values() if other.check())
            if reloaded:
                self.generation += 1
            return reloaded

    def maybe_check(self) -> int:
        """Check the files when the interval has passed since the last check; return
        how many were reloaded (0 when not checked)."""
        if (self._lists or self._others) and self._clock() >= self._next_check:
            return self.check()
        return 0
