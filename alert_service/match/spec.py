"""Declarative rule settings, as read from the ``rules`` section of the config.

These frozen dataclasses hold what the user wrote; :func:`alert_service.match.rules.compile_rule`
checks and compiles them into fast matchers. :func:`rule_spec_from_config` builds them
from one validated YAML rule (the config loader calls it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from alert_service.parse.event import Action

__all__ = [
    "BASELINE_MODES",
    "DEFAULT_BASELINE_MODE",
    "DIRECTIONS",
    "HOST_FIELDS",
    "UNKNOWN",
    "AddressSpec",
    "BaselineMode",
    "ConditionsSpec",
    "Direction",
    "ProcessSpec",
    "RuleSpec",
    "TextPatternSpec",
    "UserSpec",
    "rule_spec_from_config",
]

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


@dataclass(frozen=True, slots=True)
class ConditionsSpec:
    """A set of ANDed conditions without a name: one entry of a rule's ``exclude`` list.

    Attributes have the meaning of :class:`RuleSpec`'s; ``actions`` None means any action.
    """

    actions: tuple[Action, ...] | None = None
    host: TextPatternSpec | None = None
    remote_address: AddressSpec | None = None
    remote_port: tuple[int | str, ...] | None = None
    process: ProcessSpec | None = None
    user: UserSpec | None = None
    direction: tuple[Direction, ...] | None = None
    queries: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule; its conditions are ANDed, an absent condition always holds.

    Attributes:
        name: unique rule name, reported in alerts.
        notify: names of the notifiers that receive its alerts.
        actions: event actions that may match (default: only ``added``).
        host: patterns tried on ``hostIdentifier``, then the ``hostname``, ``fqdn`` and
            ``computer_name`` decorations (:data:`HOST_FIELDS`); any match holds.
        remote_address: CIDR / IOC-file include and exclude lists for ``remote_address``.
        remote_port: ports (``443``) and inclusive ranges (``"6660-6669"``).
        process: patterns for the ``name``/``path``/``cmdline`` columns.
        queries: query names; the event's full name or its query part must be one.
        user: ``username`` patterns and ``uid`` ranges.
        direction: allowed ``direction`` values (``<unknown>`` for an empty one).
        exclude: condition sets that veto the rule when any one of them holds.
        dedup_window_secs: this rule's dedup window in seconds, overriding
            ``delivery.dedup_window_secs``; None keeps the global one.
        baseline: what to do with a genuinely new row of a ``counter`` 0 run
            (:data:`BaselineMode`; default ``alert``).
    """

    name: str
    notify: tuple[str, ...]
    actions: tuple[Action, ...] = ("added",)
    host: TextPatternSpec | None = None
    remote_address: AddressSpec | None = None
    remote_port: tuple[int | str, ...] | None = None
    process: ProcessSpec | None = None
    queries: tuple[str, ...] | None = None
    user: UserSpec | None = None
    direction: tuple[Direction, ...] | None = None
    exclude: tuple[ConditionsSpec, ...] = ()
    dedup_window_secs: float | None = None
    baseline: BaselineMode = DEFAULT_BASELINE_MODE


HOST_FIELDS: tuple[str, ...] = ("hostIdentifier", "hostname", "fqdn", "computer_name")
"""Where ``host`` patterns look, in order: the line's ``hostIdentifier``, then these
decorations when present (osquery's ``system_info`` columns ``hostname`` /
``computer_name``, Fleet's ``fqdn``)."""


def _patterns(raw: Mapping[str, Any] | None) -> TextPatternSpec | None:
    if raw is None:
        return None
    return TextPatternSpec(
        exact=tuple(raw.get("exact", ())),
        glob=tuple(raw.get("glob", ())),
        regex=tuple(raw.get("regex", ())),
    )


def _conditions(raw: Mapping[str, Any]) -> dict[str, Any]:
    addr = raw.get("remote_address")
    proc = raw.get("process")
    user = raw.get("user")
    ports = raw.get("remote_port")
    queries = raw.get("queries")
    direction = raw.get("direction")
    uid = user.get("uid") if user is not None else None
    return {
        "host": _patterns(raw.get("host")),
        "remote_address": (
            AddressSpec(
                tuple(addr.get("include", ())),
                tuple(addr.get("exclude", ())),
                tuple(addr.get("include_files", ())),
                tuple(addr.get("exclude_files", ())),
            )
            if addr is not None
            else None
        ),
        "remote_port": tuple(ports) if ports is not None else None,
        "process": (
            ProcessSpec(
                _patterns(proc.get("name")),
                _patterns(proc.get("path")),
                _patterns(proc.get("cmdline")),
            )
            if proc is not None
            else None
        ),
        "user": (
            UserSpec(_patterns(user.get("name")), tuple(uid) if uid is not None else None)
            if user is not None
            else None
        ),
        "direction": tuple(direction) if direction is not None else None,
        "queries": tuple(queries) if queries is not None else None,
    }


def rule_spec_from_config(raw: Mapping[str, Any]) -> RuleSpec:
    """Build a :class:`RuleSpec` from one rule of the config (already schema-checked).

    Args:
        raw: the rule mapping; keys that failed validation may be left out. An
            ``exclude`` item that is not a mapping becomes an empty
            :class:`ConditionsSpec`, so the others keep their index (for the paths
            in the config loader's messages).

    Returns:
        The spec with defaults applied (``actions`` ``("added",)``).
    """
    excludes = tuple(
        ConditionsSpec(
            actions=tuple(item["actions"]) if "actions" in item else None, **_conditions(item)
        )
        if isinstance(item, Mapping)
        else ConditionsSpec()
        for item in raw.get("exclude", ())
    )
    window = raw.get("dedup_window_secs")
    return RuleSpec(
        name=raw.get("name", ""),
        notify=tuple(raw.get("notify", ())),
        actions=cast(tuple[Action, ...], tuple(raw.get("actions", ("added",)))),
        exclude=excludes,
        dedup_window_secs=float(window) if window is not None else None,
        baseline=cast(BaselineMode, raw.get("baseline", DEFAULT_BASELINE_MODE)),
        **_conditions(raw),
    )
