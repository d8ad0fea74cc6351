"""Compiled rules and the rule set that matches events against them.

What each condition tests is in :mod:`alert_service.match.conditions`; a rule is its
conditions plus the ``exclude`` entries that veto it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from alert_service.errors import MatchError
from alert_service.match.alert import Alert, alert_id
from alert_service.match.conditions import (
    CONDITIONS,
    CompiledConditions,
    EventView,
    IndexedRow,
    Keys,
    RuleSpec,
    check_conditions,
)
from alert_service.match.index import RuleIndex
from alert_service.match.iocs import IocFiles
from alert_service.parse.event import Action, Event

__all__ = [
    "CompiledConditions",
    "CompiledRule",
    "EventView",
    "RuleSet",
    "check_rule",
    "compile_rule",
]


class CompiledRule:
    """A :class:`~alert_service.match.conditions.RuleSpec` ready for matching.

    The rule matches when its conditions hold and none of its ``exclude`` entries does.

    Args:
        spec: the rule as configured.
        iocs: where IOC files are loaded (a private :class:`IocFiles` when None).

    Raises:
        MatchError: see :class:`CompiledConditions`.
    """

    __slots__ = ("_conditions", "_excludes", "keys", "spec")

    def __init__(self, spec: RuleSpec, iocs: IocFiles | None = None) -> None:
        files = iocs if iocs is not None else IocFiles()
        self.spec = spec
        self._conditions = CompiledConditions(spec, "", files)
        self._excludes = tuple(
            CompiledConditions(item, f".exclude[{i}]", files) for i, item in enumerate(spec.exclude)
        )
        keys: list[Keys] = []
        for condition in CONDITIONS:
            value = getattr(spec, condition.key)
            if value is not None:
                keys += condition.keys(value, files)
        self.keys: tuple[Keys, ...] = tuple(keys)
        """What an event must show for the rule to match (:class:`RuleIndex`)."""

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.spec.name

    def matches(self, event: Event | EventView) -> bool:
        """Return True when the rule's conditions hold and no ``exclude`` entry does."""
        view = event if isinstance(event, EventView) else EventView(event)
        if not self._conditions.holds(view):
            return False
        return not self.vetoed(view)

    def vetoed(self, view: EventView) -> bool:
        """Return True when one of the rule's ``exclude`` entries holds for the event."""
        return any(exclude.holds(view) for exclude in self._excludes)


def check_rule(spec: RuleSpec) -> list[MatchError]:
    """Return every problem of ``spec`` (each CIDR, port, uid, regex and IOC file on its own).

    Unlike :func:`compile_rule`, which stops at the first problem, this lets the config
    loader report them all. ``err.where`` locates each one inside the rule.
    """
    errors: list[MatchError] = []
    check_conditions(spec, "", errors)
    for i, item in enumerate(spec.exclude):
        check_conditions(item, f".exclude[{i}]", errors)
    return errors


def compile_rule(spec: RuleSpec, iocs: IocFiles | None = None) -> CompiledRule:
    """Compile one rule (see :class:`CompiledRule`; raises ``MatchError``)."""
    return CompiledRule(spec, iocs)


class RuleSet:
    """All rules, compiled once; several rules may match one event.

    An event is tested only against the rules its values can match, found by a
    :class:`~alert_service.match.index.RuleIndex` of the rules' exact values, ranges
    and patterns, so the cost per event does not grow with the number of rules.

    IOC files are shared between rules and checked for changes at most every
    ``ioc_check_interval_secs`` while matching (and on :meth:`refresh`).

    Args:
        specs: rules in configuration order.
        ioc_check_interval_secs: least time between two checks of the IOC files, seconds.
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        MatchError: a rule does not compile (the message names the rule).
    """

    __slots__ = ("_as_added", "_index", "_last", "_rules", "_tests", "iocs")

    def __init__(
        self,
        specs: Iterable[RuleSpec],
        *,
        ioc_check_interval_secs: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iocs = IocFiles(ioc_check_interval_secs, clock)
        rules: list[CompiledRule] = []
        for spec in specs:
            try:
                rules.append(compile_rule(spec, self.iocs))
            except MatchError as err:
                raise MatchError(f"rule {spec.name!r}: {err}", err.where) from err
        self._rules = tuple(rules)
        # What match() runs per rule: CompiledRule.matches without its per-call checks.
        self._tests = tuple(
            (rule, rule._conditions.holds, rule.vetoed if rule._excludes else None)
            for rule in rules
            if rule.spec.enabled
        )
        self._index = RuleIndex([rule.keys for rule, _, _ in self._tests])
        self._last: EventView | None = None
        # The last removed event matched, and its candidates as ``added``.
        self._as_added: tuple[Event | None, int] = (None, 0)

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """The compiled rules, in configuration order."""
        return self._rules

    def refresh(self) -> int:
        """Check the IOC files now (e.g. once per source poll); return how many reloaded."""
        reloaded = self.iocs.check()
        if reloaded:
            self._reindex()
        return reloaded

    def _reindex(self) -> None:
        self._index = RuleIndex([rule.keys for rule, _, _ in self._tests])
        self._as_added = (None, 0)

    def match(self, event: Event, view: EventView | None = None) -> list[Alert]:
        """Return one :class:`~alert_service.match.alert.Alert` per matching rule, in rule order.

        ``view``: the event's :class:`EventView` when the caller shares one with the
        aggregation rules (values such as the parsed address are computed once).
        """
        if self.iocs.maybe_check():
            self._reindex()
        if view is None:
            view = EventView(event)
        self._last = view
        if view.action == "removed":
            # The baseline will ask whether the row matched as ``added``: both sets of
            # candidates come from one lookup per dimension.
            mask, added = self._index.candidates_pair(view, "added")
            self._as_added = (event, added)
        else:
            mask = self._index.candidates(view)
        if not mask:
            return []
        alerts: list[Alert] = []
        ident: str | None = None
        tests = self._tests
        while mask:
            low = mask & -mask
            mask ^= low
            rule, holds, vetoed = tests[low.bit_length() - 1]
            if holds(view) and (vetoed is None or not vetoed(view)):
                if ident is None:
                    ident = alert_id(event)
                spec = rule.spec
                alerts.append(Alert(ident, spec.name, spec.notify, event, severity=spec.severity))
        return alerts

    def cannot_match(self, view: EventView) -> bool:
        """True when no rule can match the viewed row: :meth:`match` would return no
        alert and, for a ``removed`` row, ``matches_as(event, "added")`` would be False.

        Only the index is consulted (its lookups read the action, columns and peer
        number, so ``view`` may be :meth:`EventView.of_row`); False means "maybe", and
        the caller builds the event and calls :meth:`match`. The IOC files are checked
        as :meth:`match` checks them. tests/alert_service/match/test_match_pass_over.py
        proves the claim on random rules and lines.
        """
        if self.iocs.maybe_check():
            self._reindex()
        return self._index.none_possible(view)

    def row_cannot_match(self, row: IndexedRow) -> bool:
        """:meth:`cannot_match` of a skimmed line (:class:`SkimView`) or another
        :class:`IndexedRow`, against the index as it is: the caller checks the IOC
        files first (:meth:`maybe_refresh`, once per chunk of lines, as :meth:`match`
        does per event). The pipeline asks it of nearly every line."""
        return self._index.none_possible(row)

    def maybe_refresh(self) -> None:
        """Check the IOC files when their interval has passed (as :meth:`match` does)
        and rebuild the index when one reloaded."""
        if self.iocs.maybe_check():
            self._reindex()

    def matches_as(self, event: Event, action: Action) -> bool:
        """Return True when some rule would match ``event`` were its action ``action``.

        The baseline asks this of ``removed`` rows (would the row have matched when it
        was ``added``?). The event is not copied; values already computed for it by
        the last :meth:`match` (its parsed peer address) are reused, and when that
        :meth:`match` was of this ``removed`` event it has already found the
        candidates as ``added`` (:meth:`RuleIndex.candidates_pair`): only those are
        tested, usually none.
        """
        cached, added = self._as_added
        known = action == "added" and cached is event
        if known and not added:
            return False  # the common answer, from match()'s lookups
        view = EventView(event, action)
        last = self._last
        if last is not None and last.event is event:
            view.reuse(last)
        mask = added if known else self._index.candidates(view)
        tests = self._tests
        while mask:
            low = mask & -mask
            mask ^= low
            _, holds, vetoed = tests[low.bit_length() - 1]
            if holds(view) and (vetoed is None or not vetoed(view)):
                return True
        return False
