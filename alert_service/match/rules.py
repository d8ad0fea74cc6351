"""Compiled rules and the rule set that matches events against them.

Columns used (extension/columns.py): ``remote_address``, ``remote_port``, ``name``,
``path``, ``cmdline``, ``username``, ``uid``, ``direction``; decorations ``hostname``,
``fqdn``, ``computer_name`` for ``host``. Every text pattern is anchored
(:mod:`alert_service.match.text`), every number compared as an integer.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from functools import partial

from alert_service.errors import MatchError
from alert_service.match.addresses import (
    AddressSet,
    address_number,
    parse_address,
    parse_network,
)
from alert_service.match.alert import Alert, alert_id
from alert_service.match.iocs import IocFiles, IocList, load_ioc_file
from alert_service.match.ports import MAX_UID, NumberSet, PortSet, parse_number_item
from alert_service.match.spec import UNKNOWN, ConditionsSpec, RuleSpec, TextPatternSpec
from alert_service.match.text import TextMatcher, compile_regex
from alert_service.parse.event import ColumnValue, Event

__all__ = [
    "CompiledConditions",
    "CompiledRule",
    "EventView",
    "RuleSet",
    "check_rule",
    "compile_rule",
]

_HOST_DECORATIONS = ("hostname", "fqdn", "computer_name")
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _text(value: ColumnValue) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


_NOT_YET = -1  # EventView._number before the address is looked at (numbers are > 0)


class EventView:
    """One event with the values rules test, each computed at most once.

    Args:
        event: the event.
    """

    __slots__ = ("_addr", "_number", "event")

    def __init__(self, event: Event) -> None:
        self.event = event
        self._number: int | None = _NOT_YET
        # _addr is set by the first remote_address call.

    @property
    def remote_address(self) -> _Address | None:
        """The parsed peer address (IPv4-mapped IPv6 unwrapped), or None when there is none."""
        try:
            return self._addr
        except AttributeError:
            self._addr: _Address | None = parse_address(self.event.columns.get("remote_address"))
            return self._addr

    @property
    def remote_number(self) -> int | None:
        """The peer's address number, or None when there is no peer address.

        See :func:`~alert_service.match.addresses.address_number` (IPv4-mapped IPv6 is
        unwrapped; an int, no :mod:`ipaddress` object).
        """
        number = self._number
        if number == _NOT_YET:
            number = self._number = address_number(self.event.columns.get("remote_address"))
        return number

    def hosts(self) -> tuple[str | None, ...]:
        """``hostIdentifier`` then the ``hostname``, ``fqdn``, ``computer_name`` decorations."""
        deco = self.event.decorations
        return (self.event.host_identifier, *(deco.get(k) for k in _HOST_DECORATIONS))


class _Addresses:
    """Inline CIDRs plus IOC lists: one membership test on an address number.

    ``contains(number)`` is the inline set's own test when there are no IOC lists (the
    common case: one call less per event).
    """

    __slots__ = ("_inline", "_lists", "contains")

    def __init__(self, inline: AddressSet | None, lists: tuple[IocList, ...]) -> None:
        self._inline = inline
        self._lists = lists
        self.contains: Callable[[int], bool] = (
            inline.contains_number if inline is not None and not lists else self._contains
        )

    def _contains(self, number: int) -> bool:
        if self._inline is not None and self._inline.contains_number(number):
            return True
        return any(ioc.contains_number(number) for ioc in self._lists)


def _matcher(spec: TextPatternSpec | None, where: str) -> TextMatcher | None:
    return TextMatcher(spec, where) if spec is not None else None


class CompiledConditions:
    """ANDed conditions of a rule or of one of its ``exclude`` entries.

    Conditions are checked cheapest first; an absent condition always holds.

    Args:
        spec: the conditions as configured.
        where: location of ``spec`` in the rule (``""`` or ``.exclude[0]``) for errors.
        iocs: where IOC files are loaded (shared by the rule set).

    Raises:
        MatchError: a CIDR, port, range, regex or IOC file is invalid; ``err.where`` is
            the path inside the rule (e.g. ``.remote_address.include[1]``).
    """

    __slots__ = (
        "_actions",
        "_cmdline",
        "_directions",
        "_exclude",
        "_host",
        "_include",
        "_name",
        "_path",
        "_ports",
        "_queries",
        "_texts",
        "_uid",
        "_username",
    )

    def __init__(self, spec: RuleSpec | ConditionsSpec, where: str, iocs: IocFiles) -> None:
        self._actions = frozenset(spec.actions) if spec.actions is not None else None
        self._queries = frozenset(spec.queries) if spec.queries is not None else None
        self._host = _matcher(spec.host, f"{where}.host")
        self._ports = (
            PortSet(spec.remote_port, f"{where}.remote_port")
            if spec.remote_port is not None
            else None
        )
        self._directions = (
            frozenset("" if d == UNKNOWN else d for d in spec.direction)
            if spec.direction is not None
            else None
        )
        self._include: _Addresses | None = None
        self._exclude: _Addresses | None = None
        addr = spec.remote_address
        if addr is not None:
            self._include = self._addresses(
                addr.include, addr.include_files, f"{where}.remote_address.include", iocs
            )
            self._exclude = self._addresses(
                addr.exclude, addr.exclude_files, f"{where}.remote_address.exclude", iocs
            )
        proc = spec.process
        self._name = _matcher(proc.name if proc else None, f"{where}.process.name")
        self._path = _matcher(proc.path if proc else None, f"{where}.process.path")
        self._cmdline = _matcher(proc.cmdline if proc else None, f"{where}.process.cmdline")
        user = spec.user
        self._username = _matcher(user.name if user else None, f"{where}.user.name")
        self._uid = (
            NumberSet(user.uid, f"{where}.user.uid", maximum=MAX_UID, what="uid")
            if user is not None and user.uid is not None
            else None
        )
        # The text conditions that are configured, with their column, in test order.
        self._texts = tuple(
            (matcher, column)
            for matcher, column in (
                (self._name, "name"),
                (self._path, "path"),
                (self._cmdline, "cmdline"),
                (self._username, "username"),
            )
            if matcher is not None
        )

    @staticmethod
    def _addresses(
        cidrs: tuple[str, ...], files: tuple[str, ...], where: str, iocs: IocFiles
    ) -> _Addresses | None:
        if not cidrs and not files:
            return None
        lists: list[IocList] = []
        for i, path in enumerate(files):
            try:
                lists.append(iocs.get(path))
            except MatchError as err:
                raise MatchError(str(err), f"{where}_files[{i}]") from err
        return _Addresses(AddressSet(cidrs, where) if cidrs else None, tuple(lists))

    def holds(self, view: EventView) -> bool:
        """Return True when every configured condition holds for the event.

        An address condition never holds for an event without a peer address (empty,
        unparsable, ``0.0.0.0`` or ``::``). A missing text column satisfies a pattern
        only through the literal ``<unknown>``; a missing ``uid`` never satisfies ``uid``.
        """
        event = view.event
        if self._actions is not None and event.action not in self._actions:
            return False
        if (
            self._queries is not None
            and event.name not in self._queries
            and event.query not in self._queries
        ):
            return False
        columns = event.columns
        if self._ports is not None and columns.get("remote_port") not in self._ports:
            return False
        if self._directions is not None and (_text(columns.get("direction")) or "") not in (
            self._directions
        ):
            return False
        if self._uid is not None and columns.get("uid") not in self._uid:
            return False
        include, exclude = self._include, self._exclude
        if include is not None or exclude is not None:
            number = view.remote_number
            if number is None:
                return False
            if include is not None and not include.contains(number):
                return False
            if exclude is not None and exclude.contains(number):
                return False
        if self._host is not None and not self._host.matches_any(view.hosts()):
            return False
        texts = self._texts
        return not texts or all(
            matcher.matches(_text(columns.get(column))) for matcher, column in texts
        )


class CompiledRule:
    """A :class:`~alert_service.match.spec.RuleSpec` ready for matching.

    The rule matches when its conditions hold and none of its ``exclude`` entries does.

    Args:
        spec: the rule as configured.
        iocs: where IOC files are loaded (a private :class:`IocFiles` when None).

    Raises:
        MatchError: see :class:`CompiledConditions`.
    """

    __slots__ = ("_conditions", "_excludes", "spec")

    def __init__(self, spec: RuleSpec, iocs: IocFiles | None = None) -> None:
        files = iocs if iocs is not None else IocFiles()
        self.spec = spec
        self._conditions = CompiledConditions(spec, "", files)
        self._excludes = tuple(
            CompiledConditions(item, f".exclude[{i}]", files) for i, item in enumerate(spec.exclude)
        )

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


def _check_conditions(
    spec: RuleSpec | ConditionsSpec, where: str, attempt: Callable[[Callable[[], object]], None]
) -> None:
    patterns = [(f"{where}.host", spec.host)]
    if spec.process is not None:
        patterns += [
            (f"{where}.process.name", spec.process.name),
            (f"{where}.process.path", spec.process.path),
            (f"{where}.process.cmdline", spec.process.cmdline),
        ]
    if spec.user is not None:
        patterns.append((f"{where}.user.name", spec.user.name))
    for at, pattern in patterns:
        for i, text in enumerate(pattern.regex if pattern is not None else ()):
            attempt(partial(compile_regex, text, f"{at}.regex[{i}]"))
    if spec.remote_address is not None:
        for key in ("include", "exclude"):
            for i, text in enumerate(getattr(spec.remote_address, key)):
                attempt(partial(parse_network, text, f"{where}.remote_address.{key}[{i}]"))
            for i, path in enumerate(getattr(spec.remote_address, f"{key}_files")):
                attempt(partial(_check_ioc_file, path, f"{where}.remote_address.{key}_files[{i}]"))
    for i, item in enumerate(spec.remote_port or ()):
        attempt(partial(parse_number_item, item, f"{where}.remote_port[{i}]"))
    if spec.user is not None:
        for i, item in enumerate(spec.user.uid or ()):
            attempt(
                partial(
                    parse_number_item, item, f"{where}.user.uid[{i}]", maximum=MAX_UID, what="uid"
                )
            )


def _check_ioc_file(path: str, where: str) -> None:
    try:
        load_ioc_file(path)
    except MatchError as err:
        raise MatchError(str(err), where) from err


def check_rule(spec: RuleSpec) -> list[MatchError]:
    """Return every problem of ``spec`` (each CIDR, port, uid, regex and IOC file on its own).

    Unlike :func:`compile_rule`, which stops at the first problem, this lets the config
    loader report them all. ``err.where`` locates each one inside the rule.
    """
    errors: list[MatchError] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except MatchError as err:
            errors.append(err)

    _check_conditions(spec, "", attempt)
    for i, item in enumerate(spec.exclude):
        _check_conditions(item, f".exclude[{i}]", attempt)
    return errors


def compile_rule(spec: RuleSpec, iocs: IocFiles | None = None) -> CompiledRule:
    """Compile one rule (see :class:`CompiledRule`; raises ``MatchError``)."""
    return CompiledRule(spec, iocs)


class RuleSet:
    """All rules, compiled once; several rules may match one event.

    IOC files are shared between rules and checked for changes at most every
    ``ioc_check_interval_secs`` while matching (and on :meth:`refresh`).

    Args:
        specs: rules in configuration order.
        ioc_check_interval_secs: least time between two checks of the IOC files, seconds.
        clock: monotonic clock in seconds (injectable for tests).

    Raises:
        MatchError: a rule does not compile (the message names the rule).
    """

    __slots__ = ("_rules", "_tests", "iocs")

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
        )

    @property
    def rules(self) -> tuple[CompiledRule, ...]:
        """The compiled rules, in configuration order."""
        return self._rules

    def refresh(self) -> int:
        """Check the IOC files now (e.g. once per source poll); return how many reloaded."""
        return self.iocs.check()

    def match(self, event: Event) -> list[Alert]:
        """Return one :class:`~alert_service.match.alert.Alert` per matching rule, in rule order."""
        self.iocs.maybe_check()
        view = EventView(event)
        alerts: list[Alert] = []
        ident: str | None = None
        for rule, holds, vetoed in self._tests:
            if holds(view) and (vetoed is None or not vetoed(view)):
                if ident is None:
                    ident = alert_id(event)
                spec = rule.spec
                alerts.append(Alert(ident, spec.name, spec.notify, event))
        return alerts
