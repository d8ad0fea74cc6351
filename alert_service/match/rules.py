"""Compiled rules and the rule set that matches events against them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

from alert_service.errors import MatchError
from alert_service.match.addresses import AddressSet, parse_address, parse_network
from alert_service.match.alert import Alert, alert_id
from alert_service.match.ports import PortSet, parse_port_item
from alert_service.match.spec import RuleSpec
from alert_service.match.text import TextMatcher, compile_regex
from alert_service.parse.event import ColumnValue, Event

__all__ = ["CompiledRule", "RuleSet", "check_rule", "compile_rule"]


def _text(value: ColumnValue) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


class CompiledRule:
    """A :class:`~alert_service.match.spec.RuleSpec` ready for matching.

    Conditions are checked cheapest first; an absent condition always holds. Columns
    used: ``remote_port`` (int), ``remote_address``, ``name`` and ``path`` (text) from
    :data:`extension.columns.COLUMNS`.

    Args:
        spec: the rule as configured.

    Raises:
        MatchError: a CIDR, port, range or regex is invalid; ``err.where`` is the path
            inside the rule (e.g. ``.remote_address.include[1]``).
    """

    __slots__ = (
        "_actions",
        "_exclude",
        "_host",
        "_include",
        "_path",
        "_ports",
        "_process_name",
        "_queries",
        "spec",
    )

    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self._actions = frozenset(spec.actions)
        self._queries = frozenset(spec.queries) if spec.queries is not None else None
        self._host = TextMatcher(spec.host, ".host") if spec.host is not None else None
        self._ports = (
            PortSet(spec.remote_port, ".remote_port") if spec.remote_port is not None else None
        )
        addr = spec.remote_address
        self._include = (
            AddressSet(addr.include, ".remote_address.include")
            if addr is not None and addr.include
            else None
        )
        self._exclude = (
            AddressSet(addr.exclude, ".remote_address.exclude")
            if addr is not None and addr.exclude
            else None
        )
        proc = spec.process
        self._process_name = (
            TextMatcher(proc.name, ".process.name")
            if proc is not None and proc.name is not None
            else None
        )
        self._path = (
            TextMatcher(proc.path, ".process.path")
            if proc is not None and proc.path is not None
            else None
        )

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.spec.name

    def matches(self, event: Event) -> bool:
        """Return True when every configured condition holds for ``event``.

        A ``remote_address`` condition never holds for an event without a peer address
        (empty, unparsable, ``0.0.0.0`` or ``::``). A missing ``name``/``path`` column
        satisfies a process condition only through the literal ``<unknown>``.
        """
        if event.action not in self._actions:
            return False
        if (
            self._queries is not None
            and event.name not in self._queries
            and event.query not in self._queries
        ):
            return False
        if self._ports is not None and event.column("remote_port") not in self._ports:
            return False
        if self._include is not None or self._exclude is not None:
            addr = parse_address(event.column("remote_address"))
            if addr is None:
                return False
            if self._include is not None and addr not in self._include:
                return False
            if self._exclude is not None and addr in self._exclude:
                return False
        if self._host is not None and not self._host.matches_any(
            (event.host_identifier, event.decorations.get("hostname"))
        ):
            return False
        if self._process_name is not None and not self._process_name.matches(
            _text(event.column("name"))
        ):
            return False
        return self._path is None or self._path.matches(_text(event.column("path")))


def check_rule(spec: RuleSpec) -> list[MatchError]:
    """Return every problem of ``spec`` (each CIDR, port item and regex on its own).

    Unlike :func:`compile_rule`, which stops at the first problem, this lets the config
    loader report them all. ``err.where`` locates each one inside the rule.
    """
    errors: list[MatchError] = []

    def attempt(check: Callable[[], object]) -> None:
        try:
            check()
        except MatchError as err:
            errors.append(err)

    patterns = [(".host", spec.host)]
    if spec.process is not None:
        patterns += [(".process.name", spec.process.name), (".process.path", spec.process.path)]
    for where, pattern in patterns:
        for i, text in enumerate(pattern.regex if pattern is not None else ()):
            attempt(partial(compile_regex, text, f"{where}.regex[{i}]"))
    if spec.remote_address is not None:
        for key in ("include", "exclude"):
            for i, text in enumerate(getattr(spec.remote_address, key)):
                attempt(partial(parse_network, text, f".remote_address.{key}[{i}]"))
    for i, item in enumerate(spec.remote_port or ()):
        attempt(partial(parse_port_item, item, f".remote_port[{i}]"))
    return errors


def compile_rule(spec: RuleSpec) -> CompiledRule:
    """Compile one rule (see :class:`CompiledRule`; raises ``MatchError``)."""
    return CompiledRule(spec)


class RuleSet:
    """All rules, compiled once; several rules may match one event.

    Args:
        specs: rules in configuration order.

    Raises:
        MatchError: a rule does not compile (the message names the rule).
    """

    __slots__ = ("rules",)

    def __init__(self, specs: Iterable[RuleSpec]) -> None:
        rules: list[CompiledRule] = []
        for spec in specs:
            try:
                rules.append(compile_rule(spec))
            except MatchError as err:
                raise MatchError(f"rule {spec.name!r}: {err}", err.where) from err
        self.rules: tuple[CompiledRule, ...] = tuple(rules)

    def match(self, event: Event) -> list[Alert]:
        """Return one :class:`~alert_service.match.alert.Alert` per matching rule, in rule order."""
        alerts: list[Alert] = []
        ident: str | None = None
        for rule in self.rules:
            if rule.matches(event):
                if ident is None:
                    ident = alert_id(event)
                alerts.append(Alert(ident, rule.name, rule.spec.notify, event))
        return alerts
