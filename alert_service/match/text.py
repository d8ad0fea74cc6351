"""Anchored text matching: exact values, globs and full-match regexes.

Rule regexes run on RE2 (google-re2, the maintained Python binding of
https://github.com/google/re2), whose matching time is linear in the input: a
command line or name of any length, written by whoever runs code on a monitored host,
cannot stall the pipeline (Python's backtracking ``re`` took about a minute on one
1 MB command line with ``.*curl.*http.*``). RE2's syntax
(https://github.com/google/re2/wiki/Syntax) is Python's without backreferences and
lookaround; a pattern using them is refused when the config loads. Globs are
translated by :func:`fnmatch.translate`, whose output never backtracks badly.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Protocol

import re2

from alert_service.errors import MatchError
from alert_service.match.spec import UNKNOWN, TextPatternSpec

__all__ = ["Pattern", "TextMatcher", "compile_regex"]


class Pattern(Protocol):
    """A compiled pattern: ``re.Pattern`` (globs) or an RE2 regex (rule regexes)."""

    def fullmatch(self, text: str) -> Any:
        """A match object when the whole ``text`` matches, else None."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported as a config problem instead


def compile_regex(text: str, where: str = "") -> Pattern:
    """Compile one rule regex with RE2 (used with ``fullmatch``).

    Raises:
        MatchError: RE2 refuses the regex (bad syntax, or a backreference or
            lookaround, which no linear-time engine runs), or ``text`` is not a
            string (a malformed config reaching the loader's checks).
    """
    if not isinstance(text, str):
        raise MatchError(f"regex {text!r} is not text", where)
    try:
        pattern: Pattern = re2.compile(text, options=_RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise MatchError(
            f"invalid regex {text!r}: {reason} (RE2 syntax, linear-time: no "
            "backreferences or lookaround)",
            where,
        ) from err
    return pattern


class TextMatcher:
    """Compiled :class:`~alert_service.match.spec.TextPatternSpec`.

    Every pattern is anchored at both ends (``fullmatch``), unlike a regex search,
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
        patterns: list[Pattern] = [re.compile(fnmatch.translate(g)) for g in spec.glob]
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
