"""The values of rule conditions, as read from the ``rules`` section of the config.

These frozen dataclasses hold what the user wrote for one condition (text patterns,
address lists...); :mod:`alert_service.match.conditions` builds, checks and compiles
them, and holds the rule (:class:`~alert_service.match.conditions.RuleSpec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ANY_QUERY",
    "BASELINE_MODES",
    "DEFAULT_BASELINE_MODE",
    "DIRECTIONS",
    "HOST_FIELDS",
    "SEVERITIES",
    "UNKNOWN",
    "AddressSpec",
    "BaselineMode",
    "Direction",
    "ProcessSpec",
    "Severity",
    "Status",
    "TextPatternSpec",
    "UserSpec",
]

ANY_QUERY = "*"
"""The ``queries`` item that stands for every query."""

UNKNOWN = "<unknown>"
"""Pattern value that matches a missing or empty text column (and only that): an
unattributed socket's process ``name``/``path``/``cmdline``, a missing ``username``
or ``direction``."""

BaselineMode = Literal["alert", "digest", "none"]
"""What a rule does with a genuinely new row of a counter-0 (baseline) run."""

BASELINE_MODES: Final[tuple[BaselineMode, ...]] = ("alert", "digest", "none")
DEFAULT_BASELINE_MODE: Final[BaselineMode] = "alert"

Direction = Literal["inbound", "outbound", "listening", "<unknown>"]
"""Values of a rule's ``direction`` list; ``<unknown>`` stands for an empty ``direction``."""

DIRECTIONS: tuple[Direction, ...] = ("inbound", "outbound", "listening", "<unknown>")

Status = Literal["connected", "refused", "unreachable", "timed_out", "<unknown>"]
"""Values of a rule's ``status`` list: how a TCP connection attempt ended (the
extension's ``status`` column); ``<unknown>`` stands for an empty one (listeners, UDP,
rows from the sampler alone)."""

Severity = Literal["info", "low", "medium", "high", "critical"]
"""A rule's ``severity``, lowest first (the levels of Sigma rules' ``level``:
https://github.com/SigmaHQ/sigma-specification, "Level")."""

SEVERITIES: Final[tuple[Severity, ...]] = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class TextPatternSpec:
    """Text patterns; a value matches when any one of them matches.

    Attributes:
        exact: values compared as whole strings (case-sensitive).
        glob: shell patterns (``fnmatch`` rules, case-sensitive, ``*`` also crosses
            ``/``) matched against the whole value.
        regex: regular expressions in RE2 syntax (linear time; no backreferences or
            lookaround) matched against the whole value: ``443`` never matches
            ``8443``.
    """

    exact: tuple[str, ...] = ()
    glob: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AddressSpec:
    """Remote address condition.

    Attributes:
        include: CIDRs (``10.0.0.0/8``, ``2001:db8::/32``) or single addresses.
        exclude: CIDRs or addresses the address must not be inside.
        include_files: IOC list files (one address or CIDR per line, ``#`` comments);
            reloaded when they change (:mod:`alert_service.match.iocs`).
        exclude_files: IOC list files of addresses the address must not be inside.

    When ``include`` or ``include_files`` is non-empty the address must be inside one
    of their networks; it must never be inside ``exclude`` or ``exclude_files``.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_files: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """Process condition on the ``name``, ``path`` and ``cmdline`` columns (all given must hold)."""

    name: TextPatternSpec | None = None
    path: TextPatternSpec | None = None
    cmdline: TextPatternSpec | None = None


@dataclass(frozen=True, slots=True)
class UserSpec:
    """User condition (both given must match).

    Attributes:
        name: patterns for the ``username`` column.
        uid: uids (``0``) and inclusive ranges (``"1000-59999"``) for the ``uid`` column;
            a row without ``uid`` never matches them.
    """

    name: TextPatternSpec | None = None
    uid: tuple[int | str, ...] | None = None


HOST_FIELDS: tuple[str, ...] = ("hostIdentifier", "hostname", "fqdn", "computer_name", "host_uuid")
"""Where ``host`` patterns look, in order: the line's ``hostIdentifier``, then these
decorations when present (osquery's ``system_info`` columns ``hostname`` /
``computer_name`` / ``uuid``, as Fleet's default decorators name them: ``hostname``,
``host_uuid``; ``fqdn`` where a decorator adds it)."""
