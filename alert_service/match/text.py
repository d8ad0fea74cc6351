"""Anchored text matching: exact values, globs and full-match regexes."""

from __future__ import annotations

import fnmatch
import re

from alert_service.errors import MatchError
from alert_service.match.spec import UNKNOWN, TextPatternSpec

__all__ = ["TextMatcher", "compile_regex"]


def compile_regex(text: str, where: str = "") -> re.Pattern[str]:
    """Compile one rule regex (used with ``fullmatch``).

    Raises:
        MatchError: the regex does not compile, or ``text`` is not a string (a
            malformed config reaching the loader's checks).
    """
    if not isinstance(text, str):
        raise MatchError(f"regex {text!r} is not text", where)
    try:
        return re.compile(text)
    except re.error as err:
        raise MatchError(f"invalid regex {text!r}: {err}", where) from err


class TextMatcher:
    """Compiled :class:`~alert_service.match.spec.TextPatternSpec`.

    Every pattern is anchored at both ends (``re.fullmatch``), unlike a regex search,
    where ``443`` would also match ``8443``. A missing value (None or ``""``) matches only when the
    literal ``<unknown>`` is one of the exact values or globs.

    Args:
        spec: the patterns.
        where: location of ``spec`` in the rule for error messages, e.g. ``.host``.

    Raises:
        MatchError: a regex does not compile (``where`` points at it).
    """

    __slots__ = ("_exact", "_patterns", "accepts_unknown")

    def __init__(self, spec: TextPatternSpec, where: str = "") -> None:
        self._exact = frozenset(spec.exact)
        patterns: list[re.Pattern[str]] = [re.compile(fnmatch.translate(g)) for g in spec.glob]
        for i, text in enumerate(spec.regex):
            patterns.append(compile_regex(text, f"{where}.regex[{i}]"))
        self._patterns = tuple(patterns)
        self.accepts_unknown = UNKNOWN in self._exact or UNKNOWN in spec.glob

    def matches(self, value: str | None) -> bool:
        """Return True when ``value`` matches; see the class docs for missing values."""
        if not value:
            return self.accepts_unknown
        if value in self._exact:
            return True
        return any(p.fullmatch(value) for p in self._patterns)

    def matches_any(self, values: tuple[str | None, ...]) -> bool:
        """Return True when at least one present value matches.

        Missing values are ignored unless all are missing, then ``<unknown>`` applies.
        """
        present = [v for v in values if v]
        if not present:
            return self.accepts_unknown
        return any(self.matches(v) for v in present)
