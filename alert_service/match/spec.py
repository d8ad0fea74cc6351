"""Declarative rule settings, as read from the ``rules`` section of the config.

These frozen dataclasses hold what the user wrote; :func:`alert_service.match.rules.compile_rule`
checks and compiles them into fast matchers. :mod:`alert_service.config` builds them
from the validated YAML.
"""

from __future__ import annotations

from dataclasses import dataclass

from alert_service.parse.event import Action

__all__ = ["UNKNOWN", "AddressSpec", "ProcessSpec", "RuleSpec", "TextPatternSpec"]

UNKNOWN = "<unknown>"
"""Pattern value that matches a missing or empty process name/path (and only that)."""


@dataclass(frozen=True, slots=True)
class TextPatternSpec:
    """Text patterns; a value matches when any one of them matches.

    Attributes:
        exact: values compared as whole strings (case-sensitive).
        glob: shell patterns (``fnmatch`` rules, case-sensitive, ``*`` also crosses
            ``/``) matched against the whole value.
        regex: Python regular expressions matched against the whole value
            (``re.fullmatch``): ``443`` never matches ``8443``.
    """

    exact: tuple[str, ...] = ()
    glob: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AddressSpec:
    """Remote address condition.

    Attributes:
        include: CIDRs (``10.0.0.0/8``, ``2001:db8::/32``) or single addresses; when
            non-empty the address must be inside one of them.
        exclude: CIDRs or addresses the address must not be inside.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """Process condition on the ``name`` and ``path`` columns (both must match if given)."""

    name: TextPatternSpec | None = None
    path: TextPatternSpec | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule; its conditions are ANDed, an absent condition always holds.

    Attributes:
        name: unique rule name, reported in alerts.
        notify: names of the notifiers that receive its alerts.
        actions: event actions that may match (default: only ``added``).
        host: patterns for ``hostIdentifier`` or the ``hostname`` decoration.
        remote_address: CIDR include/exclude lists for ``remote_address``.
        remote_port: ports (``443``) and inclusive ranges (``"6660-6669"``).
        process: patterns for the ``name``/``path`` columns.
        queries: query names; the event's full name or its query part must be one.
    """

    name: str
    notify: tuple[str, ...]
    actions: tuple[Action, ...] = ("added",)
    host: TextPatternSpec | None = None
    remote_address: AddressSpec | None = None
    remote_port: tuple[int | str, ...] | None = None
    process: ProcessSpec | None = None
    queries: tuple[str, ...] | None = None
