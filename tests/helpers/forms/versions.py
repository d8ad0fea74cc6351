"""Fleet versions and the version spans a form or a rule claims.

A span is written ``4.82+`` (4.82 and later) or ``4.35-4.81`` (both ends included, as
minor releases). A rule holds from ``since`` (included) to ``until`` (excluded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Span", "Version", "check_versions"]

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, order=True)
class Version:
    """A Fleet release ``major.minor.patch``."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text.strip())
        if not match:
            raise ValueError(f"not a version: {text!r}")
        return cls(int(match[1]), int(match[2]), int(match[3] or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}" + (f".{self.patch}" if self.patch else "")


@dataclass(frozen=True)
class Span:
    """Fleet versions ``low`` (included) up to ``high`` (excluded; None: no end)."""

    low: Version
    high: Version | None = None

    @classmethod
    def parse(cls, text: str) -> Span:
        """``4.82+`` or ``4.35-4.81`` (the upper minor release included)."""
        text = text.strip()
        if text.endswith("+"):
            return cls(Version.parse(text[:-1]))
        low, sep, high = text.partition("-")
        if not sep:
            raise ValueError(f"not a version span: {text!r} (use 4.82+ or 4.35-4.81)")
        last = Version.parse(high)
        return cls(Version.parse(low), Version(last.major, last.minor + 1))

    def __contains__(self, version: object) -> bool:
        if not isinstance(version, Version):
            return False
        return self.low <= version and (self.high is None or version < self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{self.low}+"
        return f"{self.low}-{self.high.major}.{self.high.minor - 1}"


def check_versions(span: Span, boundaries: Iterable[Version]) -> list[Version]:
    """The versions to check a form claiming ``span`` at: its start and every rule
    boundary inside it (between two boundaries the rules do not change)."""
    points = {span.low} | {b for b in boundaries if b in span}
    return sorted(points)
