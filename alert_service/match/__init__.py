"""Match stage: compiled rules decide which events become alerts.

Public API:

* :class:`RuleSpec` (with :class:`TextPatternSpec`, :class:`AddressSpec`,
  :class:`ProcessSpec`) — a rule as configured;
* :class:`RuleSet` — rules compiled once; ``RuleSet(specs).match(event)`` → list of
  :class:`Alert`;
* :func:`compile_rule` — compile one rule, raising
  :class:`~alert_service.errors.MatchError` with a location; :func:`check_rule` —
  every problem of a rule at once;
* :class:`Alert`, :func:`alert_id` — the stage's output and its stable id;
* :class:`AddressSet`, :class:`PortSet`, :class:`TextMatcher` — the condition matchers.
"""

from __future__ import annotations

from alert_service.match.addresses import AddressSet, parse_address
from alert_service.match.alert import Alert, alert_id
from alert_service.match.ports import PortSet
from alert_service.match.rules import CompiledRule, RuleSet, check_rule, compile_rule
from alert_service.match.spec import UNKNOWN, AddressSpec, ProcessSpec, RuleSpec, TextPatternSpec
from alert_service.match.text import TextMatcher

__all__ = [
    "UNKNOWN",
    "AddressSet",
    "AddressSpec",
    "Alert",
    "CompiledRule",
    "PortSet",
    "ProcessSpec",
    "RuleSet",
    "RuleSpec",
    "TextMatcher",
    "TextPatternSpec",
    "alert_id",
    "check_rule",
    "compile_rule",
    "parse_address",
]
