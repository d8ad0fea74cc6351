"""DNS names as rules compare them, and domain IOC list files reloaded on change.

**The compared form** (:func:`normalize_name`, :func:`normalize_pattern`): the form the
extension writes to ``remote_hostname`` (docs/extension.md, "DNS names"): ASCII
lower case, no trailing dot, an internationalised label in its ACE form (``xn--…``,
RFC 5890 section 2.3.2.1), odd octets escaped as dnspython writes them (``\\032``,
``\\.``). A name written in a rule or a list is mapped to that form with UTS #46
(Unicode Technical Standard #46, non-transitional, as implemented by the ``idna``
package): ``Bücher.Example。`` becomes ``xn--bcher-kva.example``. ASCII labels are only
lower-cased, so ``_dmarc`` or ``\\032`` stay as written; a label that is not valid
IDNA is refused with the reason.

**Domain IOC files** (:class:`DomainList`), one entry per line, UTF-8::

    # comment line
    evil.example            # the domain and every name under it; text after '#' is a comment
    *.c2.example            # the same: "*." is accepted and means the domain and its subdomains
    Bücher.example          # written in Unicode: compared in its ACE form

Blank lines are ignored. A line that is not a domain (an address, a URL, two words, an
invalid label, a line that is not UTF-8) is a *bad line*: counted, reported in the
``domain_list_bad_lines`` log event with its line number and reason, and skipped; the
other lines are used. A file that cannot be read at start is a configuration error;
later, like the address lists (:mod:`alert_service.match.iocs`), a change of
(device, inode, size, mtime) reloads the file, and a file that cannot be read keeps
the previous list (``ioc_reload_failed``); a good new version is logged as
``ioc_reloaded``.

A lookup walks the name's suffixes (``a.b.example``, ``b.example``, ``example``), one
set lookup each, so its cost does not grow with the list.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import idna

from alert_service.errors import MatchError
from alert_service.logs import log_event
from alert_service.match.iocs import IocVersion

__all__ = [
    "BAD_LINES_REPORTED",
    "DomainList",
    "DomainListContents",
    "column_name",
    "domain_entry",
    "labels",
    "load_domain_file",
    "normalize_name",
    "normalize_pattern",
    "parse_domain_lines",
    "suffixes",
]

_log = logging.getLogger(__name__)

BAD_LINES_REPORTED: Final = 10
"""Most bad lines whose number and reason one ``domain_list_bad_lines`` event lists."""

_GLOB_CHARS: Final = frozenset("*?[]")
_ADDRESS_CHARS: Final = frozenset("0123456789abcdefABCDEF.:/%")


def labels(name: str) -> list[str]:
    """Split ``name`` at its dots, keeping an escaped dot (``\\.``) inside its label.

    ``a\\.b.example`` has the labels ``a\\.b`` and ``example``.
    """
    if "\\" not in name:
        return name.split(".")
    out: list[str] = []
    start = i = 0
    while i < len(name):
        ch = name[i]
        if ch == "\\":
            i += 2
            continue
        if ch == ".":
            out.append(name[start:i])
            start = i + 1
        i += 1
    out.append(name[start:])
    return out


def suffixes(name: str) -> list[str]:
    """``name`` and every domain it is under: ``a.b.example`` → itself, ``b.example``,
    ``example`` (escaped dots do not split)."""
    if "\\" not in name:
        out = [name]
        dot = name.find(".")
        while dot >= 0:
            out.append(name[dot + 1 :])
            dot = name.find(".", dot + 1)
        return out
    parts = labels(name)
    return [".".join(parts[i:]) for i in range(len(parts))]


def _strip_root(text: str) -> str:
    """Drop one trailing dot (the root), unless it is escaped."""
    if text.endswith(".") and not text.endswith("\\."):
        return text[:-1]
    return text


def _ace(label: str, glob: bool) -> str:
    if label.isascii():
        return label.lower()
    if glob and _GLOB_CHARS.intersection(label):
        raise ValueError(
            f"label {label!r} mixes glob characters and non-ASCII letters; write its "
            "xn-- form"
        )
    try:
        return idna.alabel(label).decode("ascii")
    except idna.IDNAError as err:
        raise ValueError(f"label {label!r} is not a valid internationalised label: {err}") from err


def _normalize(text: str, glob: bool) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not text")
    if not text.isascii():
        try:
            text = idna.uts46_remap(text, std3_rules=False, transitional=False)
        except idna.IDNAError as err:
            raise ValueError(f"{text!r} is not a valid domain name: {err}") from err
    text = _strip_root(text.strip())
    if not text:
        raise ValueError("empty domain name")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ValueError(f"{text!r} holds a space or control character (write \\032 for a space)")
    parts = labels(text)
    if any(not part for part in parts):
        raise ValueError(f"{text!r} has an empty label")
    return ".".join(_ace(part, glob) for part in parts)


def normalize_name(text: str) -> str:
    """Return the compared form of a domain name (see the module docs).

    Raises:
        ValueError: the text is empty, has an empty label (``a..b``), a space or a
            control character, or a label that is not valid IDNA; or is not text.
    """
    if text.isascii() and text.islower() and "\\" not in text and " " not in text:
        fast = _strip_root(text)
        if fast and "" not in fast.split(".") and fast.isprintable():
            return fast
    return _normalize(text, glob=False)


def normalize_pattern(text: str) -> str:
    """Return a glob (``*.evil-*.example``) in the compared form: like
    :func:`normalize_name`, glob characters kept.

    Raises:
        ValueError: as :func:`normalize_name`, or a label mixes glob characters with
            non-ASCII letters (it has no ACE form).
    """
    return _normalize(text, glob=True)


def column_name(value: object) -> str | None:
    """The compared form of a ``remote_hostname`` value, or None when there is no name.

    The extension already writes the compared form; a value that is not (written by
    another tool) is lower-cased and IDNA-mapped when it can be, else compared
    lower-cased as it is.
    """
    if not value or not isinstance(value, str):
        return None
    if value.isascii():
        return _strip_root(value.lower()) or None
    try:
        return _normalize(value, glob=False)
    except ValueError:
        return _strip_root(value.lower()) or None


def _entry(text: str) -> str:
    """One domain of a list or of a rule's ``domain`` list; ``*.`` prefix allowed."""
    if text.startswith("*."):
        text = text[2:]
    if _ADDRESS_CHARS.issuperset(text):  # only then can it be an address (fast path)
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
        else:
            raise ValueError(f"{text!r} is an address, not a domain (address lists take it)")
    if "/" in text or ":" in text:
        raise ValueError(f"{text!r} is not a domain name (a URL or a port?)")
    name = normalize_name(text)
    if _GLOB_CHARS.intersection(name):
        raise ValueError(f"{text!r} holds a glob character; only a leading '*.' is allowed")
    return name


def domain_entry(text: str) -> str:
    """Return the compared form of one domain of a rule's ``domain`` list.

    Raises:
        ValueError: see :func:`normalize_name`; also an address, a URL or a glob.
    """
    return _entry(text)


@dataclass(frozen=True, slots=True)
class DomainListContents:
    """One parsed version of a domain list file.

    Attributes:
        version: the file version it was read from (None for lines not from a file).
        domains: the domains, compared form.
        entries: good lines (duplicates included).
        bad_lines: ``(line number, reason)`` of every bad line.
    """

    version: IocVersion | None
    domains: frozenset[str]
    entries: int
    bad_lines: tuple[tuple[int, str], ...]


def parse_domain_lines(
    lines: Iterable[str | bytes], version: IocVersion | None = None
) -> DomainListContents:
    """Parse the lines of a domain list (see the module docs); never raises for a line.

    Args:
        lines: the file's lines, text or bytes (decoded as UTF-8 one by one, so one
            line that is not UTF-8 is one bad line), with or without line ends.
        version: the file version, kept in the result.
    """
    domains: set[str] = set()
    bad: list[tuple[int, str]] = []
    entries = 0
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad.append((number, f"not UTF-8 text: {err.reason}"))
                continue
        else:
            line = raw
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            domains.add(_entry(text))
        except ValueError as err:
            bad.append((number, str(err)))
            continue
        entries += 1
    return DomainListContents(version, frozenset(domains), entries, tuple(bad))


_CACHE: dict[str, DomainListContents] = {}
_CACHE_LOCK = threading.Lock()


def load_domain_file(path: str) -> DomainListContents:
    """Read and parse one domain list file; the last parse of a path is reused while its
    (device, inode, size, mtime) is unchanged.

    Raises:
        MatchError: the file cannot be read (a path with a NUL byte included), or
            ``path`` is not a string. Bad lines are not errors (see
            :attr:`DomainListContents.bad_lines`).
    """
    if not isinstance(path, str):
        raise MatchError(f"domain list {path!r} is not a path")
    try:
        with open(path, "rb") as fh:
            version = IocVersion.of(os.fstat(fh.fileno()))
            with _CACHE_LOCK:
                cached = _CACHE.get(path)
            if cached is not None and cached.version == version:
                return cached
            contents = parse_domain_lines(fh.read().splitlines(), version)
    except OSError as err:
        raise MatchError(f"cannot read domain list {path}: {err.strerror or err}") from err
    except ValueError as err:  # open() refuses a path with a NUL byte
        raise MatchError(f"cannot read domain list {path!r}: {err}") from err
    with _CACHE_LOCK:
        _CACHE[path] = contents
    return contents


def _report_bad_lines(path: str, contents: DomainListContents) -> None:
    if not contents.bad_lines:
        return
    shown = contents.bad_lines[:BAD_LINES_REPORTED]
    log_event(
        _log,
        logging.WARNING,
        "domain_list_bad_lines",
        path=path,
        bad_lines=len(contents.bad_lines),
        entries=contents.entries,
        first=[f"line {n}: {reason}" for n, reason in shown],
    )


class DomainList:
    """One domain list file in use by rules: suffix lookup plus change detection.

    Args:
        path: the file.

    Raises:
        MatchError: the file cannot be read at start (later failures keep the old list).
    """

    __slots__ = ("_contents", "_failed", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._contents = load_domain_file(path)
        self._failed: IocVersion | str | None = None
        _report_bad_lines(path, self._contents)

    @property
    def domains(self) -> frozenset[str]:
        """The domains of the version in use (compared form)."""
        return self._contents.domains

    @property
    def entries(self) -> int:
        """Good lines of the version in use."""
        return self._contents.entries

    @property
    def bad_lines(self) -> tuple[tuple[int, str], ...]:
        """``(line number, reason)`` of each bad line of the version in use."""
        return self._contents.bad_lines

    def __contains__(self, name: object) -> bool:
        """True when ``name`` (compared form) is a listed domain or under one."""
        if not isinstance(name, str):
            return False
        domains = self._contents.domains
        return any(s in domains for s in suffixes(name))

    def check(self) -> bool:
        """Reload the file if its (device, inode, size, mtime) changed.

        Returns:
            True when a new version was loaded. A missing or unreadable file keeps the
            current list and is logged once until the file changes again.
        """
        try:
            current = IocVersion.of(os.stat(self.path))
        except OSError as err:
            marker = f"stat:{err.errno}"
            if self._failed != marker:
                self._failed = marker
                log_event(_log, logging.WARNING, "ioc_reload_failed", path=self.path,
                          reason=f"cannot stat: {err.strerror or err}",
                          entries_kept=self.entries)  # fmt: skip
            return False
        if current in (self._contents.version, self._failed):
            return False
        try:
            contents = load_domain_file(self.path)
        except MatchError as err:
            self._failed = current
            log_event(_log, logging.WARNING, "ioc_reload_failed", path=self.path,
                      reason=str(err), entries_kept=self.entries)  # fmt: skip
            return False
        self._contents = contents
        self._failed = None
        log_event(_log, logging.INFO, "ioc_reloaded", path=self.path, entries=contents.entries,
                  bad_lines=len(contents.bad_lines))  # fmt: skip
        _report_bad_lines(self.path, contents)
        return True
