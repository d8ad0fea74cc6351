"""Match stage: compiled rules decide which events become alerts.

Public API:

* :class:`RuleSpec` (with :class:`TextPatternSpec`, :class:`AddressSpec`,
  :class:`ProcessSpec`) — a rule as configured; :data:`CONDITIONS` — the one table
  of rule conditions (:class:`Condition`: build, check, compile);
* :class:`RuleSet` — rules compiled once; ``RuleSet(specs).match(event)`` → list of
  :class:`Alert`;
* :func:`compile_rule` — compile one rule, raising
  :class:`~alert_service.errors.MatchError` with a location; :func:`check_rule` —
  every problem of a rule at once;
* :class:`Alert`, :func:`alert_id` — the stage's output and its stable id;
* :class:`AddressSet`, :class:`PortSet`, :class:`NumberSet`, :class:`TextMatcher`,
  :class:`IocList` — the condition matchers (IOC files reloaded when they change);
* :func:`rule_spec_from_config` — a validated config rule → :class:`RuleSpec`;
* :class:`HostnameSpec`, :class:`DomainList`, :func:`normalize_name` — the
  ``remote_hostname`` condition, domain IOC lists and the compared form of a name.
"""

from __future__ import annotations

from alert_service.match.addresses import AddressSet, parse_address
from alert_service.match.alert import Alert, HostNames, alert_id, host_names
from alert_service.match.conditions import (
    CONDITIONS,
    CompiledConditions,
    Condition,
    ConditionsSpec,
    EventView,
    RuleSpec,
    rule_spec_from_config,
)
from alert_service.match.domains import DomainList, normalize_name
from alert_service.match.hostnames import HostnameSpec
from alert_service.match.iocs import IocFiles, IocList, load_ioc_file, parse_ioc_lines
from alert_service.match.ports import NumberSet, PortSet
from alert_service.match.rules import CompiledRule, RuleSet, check_rule, compile_rule
from alert_service.match.spec import (
    ANY_QUERY,
    BASELINE_MODES,
    DEFAULT_BASELINE_MODE,
    DIRECTIONS,
    HOST_FIELDS,
    SEVERITIES,
    UNKNOWN,
    AddressSpec,
    BaselineMode,
    Direction,
    ProcessSpec,
    Severity,
    TextPatternSpec,
    UserSpec,
)
from alert_service.match.text import TextMatcher

__all__ = [
    "ANY_QUERY",
    "BASELINE_MODES",
    "CONDITIONS",
    "DEFAULT_BASELINE_MODE",
    "DIRECTIONS",
    "HOST_FIELDS",
    "SEVERITIES",
    "UNKNOWN",
    "AddressSet",
    "AddressSpec",
    "Alert",
    "BaselineMode",
    "CompiledConditions",
    "CompiledRule",
    "Condition",
    "ConditionsSpec",
    "Direction",
    "DomainList",
    "EventView",
    "HostNames",
    "HostnameSpec",
    "IocFiles",
    "IocList",
    "NumberSet",
    "PortSet",
    "ProcessSpec",
    "RuleSet",
    "RuleSpec",
    "Severity",
    "TextMatcher",
    "TextPatternSpec",
    "UserSpec",
    "alert_id",
    "check_rule",
    "compile_rule",
    "host_names",
    "load_ioc_file",
    "normalize_name",
    "parse_address",
    "parse_ioc_lines",
    "rule_spec_from_config",
]
