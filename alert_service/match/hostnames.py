"""The ``remote_hostname`` condition: names, domains, globs, regexes and domain lists.

Config (one condition of a rule or of an ``exclude`` / ``any_of`` entry)::

    remote_hostname:
      exact: [api.evil.example]            # the name itself
      domain: [evil.example, "*.c2.example"]   # the domain or any name under it
      glob: ["*.evil-*.example"]           # fnmatch; '*' also crosses dots
      regex: ['[a-z0-9]{16}\\.dyn\\.example']  # RE2 regex, whole name, any case
      domain_files: [/etc/tracked-connections/iocs/domains.txt]
      source: [process, namespace]         # which evidence counts (default: any)

Every name and domain is compared in one form (:func:`~alert_service.match.domains.normalize_name`):
ASCII lower case, no trailing dot, international labels in ACE form, so ``API.Evil.Example.``
and ``api.evil.example`` are one name, and ``bücher.example`` matches the row's
``xn--bcher-kva.example``. Regexes run on RE2 (:mod:`alert_service.match.text`),
case-insensitively, on that form.

The condition holds when the row has a name (``remote_hostname`` not empty), its
``remote_hostname_source`` is one of ``source`` (when given), and the name matches any
of the patterns (when any are given: ``source`` alone only asks for the evidence).
A row without a name never satisfies it. The columns are described in
docs/extension.md, "DNS names".
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, Protocol

from alert_service.errors import MatchError
from alert_service.match.domains import (
    DomainList,
    column_name,
    domain_entry,
    load_domain_file,
    normalize_name,
    normalize_pattern,
    suffixes,
)
from alert_service.match.iocs import IocFiles
from alert_service.match.text import Pattern, compile_regex

__all__ = [
    "HOSTNAME_SOURCES",
    "HostnameMatcher",
    "HostnameSource",
    "HostnameSpec",
    "build_hostname",
    "check_domain_file",
    "check_hostname",
    "compile_hostname",
    "domain_list_warnings",
]

HostnameSource = Literal["process", "namespace", "host"]
"""Values of ``remote_hostname_source``: the answer went to the connection's own process,
was seen in its network namespace, or only elsewhere on the host (a guess)."""

HOSTNAME_SOURCES: Final[tuple[HostnameSource, ...]] = ("process", "namespace", "host")


class _Columns(Protocol):
    def get(self, key: str, /) -> Any: ...


class _Row(Protocol):
    @property
    def columns(self) -> _Columns: ...


@dataclass(frozen=True, slots=True)
class HostnameSpec:
    """A ``remote_hostname`` condition as configured (see the module docs).

    Attributes:
        exact: names compared whole.
        domain: domains; a name matches one when it equals it or ends in ``.`` + it
            (a leading ``*.`` means the same).
        glob: shell patterns on the whole name (``fnmatch``; ``*`` crosses dots).
        regex: RE2 regular expressions on the whole name, case-insensitive.
        domain_files: domain list files (:class:`~alert_service.match.domains.DomainList`).
        source: the ``remote_hostname_source`` values that count; None = any.
    """

    exact: tuple[str, ...] = ()
    domain: tuple[str, ...] = ()
    glob: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    domain_files: tuple[str, ...] = ()
    source: tuple[HostnameSource, ...] | None = None


def build_hostname(raw: Mapping[str, Any]) -> HostnameSpec:
    """A validated config mapping → :class:`HostnameSpec`."""
    source = raw.get("source")
    return HostnameSpec(
        exact=tuple(raw.get("exact", ())),
        domain=tuple(raw.get("domain", ())),
        glob=tuple(raw.get("glob", ())),
        regex=tuple(raw.get("regex", ())),
        domain_files=tuple(raw.get("domain_files", ())),
        source=tuple(source) if source is not None else None,
    )


def _checked(convert: Callable[[str], str], text: str, where: str) -> str:
    try:
        return convert(text)
    except ValueError as err:
        raise MatchError(f"invalid domain name: {err}", where) from err


def _regex(text: str, where: str) -> Pattern:
    compile_regex(text, where)  # the error names the regex as written
    return compile_regex("(?i)" + text, where)  # RE2, case-insensitive


def check_domain_file(path: str, where: str) -> None:
    """Raise :class:`MatchError` at ``where`` when the domain list cannot be read (bad
    lines are reported when the rules load it, never refused)."""
    try:
        load_domain_file(path)
    except MatchError as err:
        raise MatchError(str(err), where) from err


def check_hostname(spec: HostnameSpec, where: str) -> Iterator[Callable[[], object]]:
    """One check per item of ``spec``, each raising ``MatchError`` located under ``where``."""
    for i, text in enumerate(spec.exact):
        yield partial(_checked, normalize_name, text, f"{where}.exact[{i}]")
    for i, text in enumerate(spec.domain):
        yield partial(_checked, domain_entry, text, f"{where}.domain[{i}]")
    for i, text in enumerate(spec.glob):
        yield partial(_checked, normalize_pattern, text, f"{where}.glob[{i}]")
    for i, text in enumerate(spec.regex):
        yield partial(_regex, text, f"{where}.regex[{i}]")
    for i, path in enumerate(spec.domain_files):
        yield partial(check_domain_file, path, f"{where}.domain_files[{i}]")


class HostnameMatcher:
    """A compiled :class:`HostnameSpec`: ``matches(name, source)``.

    Args:
        spec: the condition.
        where: its place in the rule, for errors.
        iocs: where domain lists are loaded (shared by the rule set, reloaded with it).

    Raises:
        MatchError: an invalid name, glob or regex, or an unreadable domain list.
    """

    __slots__ = ("_domains", "_exact", "_lists", "_patterns", "_sources", "_suffix_test")

    def __init__(self, spec: HostnameSpec, where: str, iocs: IocFiles) -> None:
        self._exact = frozenset(
            _checked(normalize_name, t, f"{where}.exact[{i}]") for i, t in enumerate(spec.exact)
        )
        self._domains = frozenset(
            _checked(domain_entry, t, f"{where}.domain[{i}]") for i, t in enumerate(spec.domain)
        )
        patterns: list[Pattern] = [
            re.compile(fnmatch.translate(_checked(normalize_pattern, t, f"{where}.glob[{i}]")))
            for i, t in enumerate(spec.glob)
        ]
        patterns += [_regex(t, f"{where}.regex[{i}]") for i, t in enumerate(spec.regex)]
        self._patterns = tuple(patterns)
        lists: list[DomainList] = []
        for i, path in enumerate(spec.domain_files):
            try:
                lists.append(iocs.get_other(path, DomainList))
            except MatchError as err:
                raise MatchError(str(err), f"{where}.domain_files[{i}]") from err
        self._lists = tuple(lists)
        self._sources = frozenset(spec.source) if spec.source is not None else None
        self._suffix_test = bool(self._domains or self._lists)

    def _any_pattern(self) -> bool:
        return bool(self._exact or self._suffix_test or self._patterns)

    def matches(self, name: str | None, source: object) -> bool:
        """True when ``name`` (compared form; None = no name) with evidence ``source``
        satisfies the condition (see the module docs)."""
        if name is None:
            return False
        if self._sources is not None and source not in self._sources:
            return False
        if not self._any_pattern():
            return True
        if name in self._exact:
            return True
        if self._suffix_test:
            domains = self._domains
            for suffix in suffixes(name):
                if suffix in domains:
                    return True
                for listed in self._lists:
                    if suffix in listed.domains:
                        return True
        return any(p.fullmatch(name) for p in self._patterns)

    def test(self, column: str, source_column: str) -> Callable[[_Row], bool]:
        """The condition as a test on a row with columns ``column`` and ``source_column``."""
        matches = self.matches

        def holds(view: _Row) -> bool:
            columns = view.columns
            return matches(column_name(columns.get(column)), columns.get(source_column))

        return holds


def compile_hostname(
    spec: HostnameSpec, where: str, iocs: IocFiles, column: str, source_column: str
) -> Callable[[_Row], bool]:
    """Compile ``spec`` into a test of the ``column`` / ``source_column`` pair.

    Raises:
        MatchError: see :class:`HostnameMatcher`.
    """
    return HostnameMatcher(spec, where, iocs).test(column, source_column)


def _shown(contents_bad: tuple[tuple[int, str], ...], limit: int = 3) -> str:
    shown = "; ".join(f"line {n}: {reason}" for n, reason in contents_bad[:limit])
    more = len(contents_bad) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def domain_list_warnings(conditions: object, where: str = "") -> list[tuple[str, str]]:
    """``(where, message)`` for each domain list with bad lines named by ``conditions``.

    Args:
        conditions: a rule (or an ``exclude`` / ``any_of`` entry); its
            ``remote_hostname``, ``exclude`` and ``any_of`` are followed.
        where: its place, e.g. ``.any_of[0]`` (``""`` for the rule).

    Returns:
        E.g. ``(".remote_hostname.domain_files[0]", "/x.txt: 2 bad lines skipped (5
        used); line 3: …")``, up to three lines each. A list that cannot be read is a
        configuration problem, reported elsewhere, and left out here.
    """
    out: list[tuple[str, str]] = []
    spec = getattr(conditions, "remote_hostname", None)
    if isinstance(spec, HostnameSpec):
        for i, path in enumerate(spec.domain_files):
            try:
                contents = load_domain_file(path)
            except MatchError:
                continue
            if contents.bad_lines:
                out.append((
                    f"{where}.remote_hostname.domain_files[{i}]",
                    f"{path}: {len(contents.bad_lines)} bad lines skipped "
                    f"({contents.entries} used); {_shown(contents.bad_lines)}",
                ))  # fmt: skip
    for key in ("exclude", "any_of"):
        for i, item in enumerate(getattr(conditions, key, None) or ()):
            out += domain_list_warnings(item, f"{where}.{key}[{i}]")
    return out
