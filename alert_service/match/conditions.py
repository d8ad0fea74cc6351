"""Rule conditions as one unit: the table that builds, checks and compiles them.

A condition is one key of a rule (and of an ``exclude`` entry): ``remote_port``,
``process``... Each is one :class:`Condition` in :data:`CONDITIONS` plus one field of
:class:`ConditionsSpec`; everything else follows from the table:

* :func:`conditions_from_config` builds the spec values from a validated rule;
* :func:`check_conditions` lists every problem of them (the config loader reports all);
* :class:`CompiledConditions` compiles them into tests on an :class:`EventView`,
  run cheapest first (each test says its cost), and picks a straight-line ``holds``
  for the common short lists so one event costs one call per configured test.

The JSON Schema describes the same keys once, in ``$defs.conditions`` of
schema/config.schema.json, which both ``rules`` items and ``exclude`` entries
reference. docs/architecture.md has the recipe for a new condition.

Columns used (docs/columns.md): ``remote_address``, ``remote_port``, ``name``,
``path``, ``cmdline``, ``username``, ``uid``, ``direction``, ``remote_hostname``,
``remote_hostname_source``; decorations ``hostname``,
``fqdn``, ``computer_name`` for ``host``. Every text pattern is anchored
(:mod:`alert_service.match.text`), every number compared as an integer.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import weakref
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, cast

from alert_service.errors import MatchError
from alert_service.match.addresses import (
    AddressSet,
    address_number,
    cached_address_number,
    parse_address,
    parse_network,
    remembered_address_number,
)
from alert_service.match.hostnames import (
    HostnameSpec,
    build_hostname,
    check_hostname,
    compile_hostname,
)
from alert_service.match.iocs import IocFiles, IocList, load_ioc_file
from alert_service.match.ports import MAX_UID, NumberSet, PortSet, parse_number_item
from alert_service.match.spec import (
    ANY_QUERY,
    DEFAULT_BASELINE_MODE,
    HOST_FIELDS,
    UNKNOWN,
    AddressSpec,
    BaselineMode,
    Direction,
    ProcessSpec,
    Severity,
    Status,
    TextPatternSpec,
    UserSpec,
)
from alert_service.match.text import (
    TextMatcher,
    combine_patterns,
    combine_regexes,
    compile_regex,
)
from alert_service.parse.event import Action, ColumnValue, Event
from alert_service.parse.row import Row
from alert_service.parse.skim import SkimColumns, SkimLine, skimmer

__all__ = [
    "CONDITIONS",
    "CompiledConditions",
    "Condition",
    "ConditionsSpec",
    "EventView",
    "IndexedRow",
    "Keys",
    "KeysOf",
    "RuleSpec",
    "SkimView",
    "Test",
    "always_holds",
    "answered_by_index",
    "check_conditions",
    "conditions_from_config",
    "rule_spec_from_config",
    "skim_view",
]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NOT_YET = -1  # EventView._number before the address is looked at (numbers are > 0)
_HOST_DECORATIONS = HOST_FIELDS[1:]


class EventView:
    """One event with the values rules test, each computed at most once.

    Args:
        event: the event.
        action: the action the rules see (default the event's own): the baseline asks
            whether a ``removed`` row would match as ``added`` without copying it.
        columns: the event's columns as the rules read them, when not
            ``event.columns`` itself: its whole typed row
            (:func:`~alert_service.parse.row.typed_columns`), equal to it column by
            column, whose ``get`` is a C call where a lazily typed
            :class:`~alert_service.parse.row.Row` runs Python per value. The pipeline
            passes it when aggregation rules need the typed row anyway.
    """

    __slots__ = ("_addr", "_number", "action", "columns", "event")

    def __init__(
        self,
        event: Event,
        action: Action | None = None,
        *,
        columns: Mapping[str, ColumnValue] | None = None,
    ) -> None:
        self.event = event
        self.columns: Mapping[str, ColumnValue] | SkimColumns = (
            event.columns if columns is None else columns
        )
        self.action: Action = event.action if action is None else action
        self._number: int | None = _NOT_YET
        # _addr is set by the first remote_address call.

    @classmethod
    def of_row(cls, columns: Mapping[str, ColumnValue] | SkimColumns, action: Action) -> EventView:
        """A view of a row not built into an event yet, for the rule index only.

        It has ``action``, ``columns`` and the peer's number (:attr:`remote_number`),
        which is all the index's dimensions read (:class:`Keys` ``get``: the action, a
        column, an address number); ``event``, :attr:`remote_address` and
        :meth:`hosts` are not available (AttributeError). ``columns`` may be a
        skimmed line's :class:`~alert_service.parse.skim.SkimColumns`: the index
        reads columns through ``get`` only.
        """
        view = cls.__new__(cls)
        view.columns = columns
        view.action = action
        view._number = _NOT_YET
        return view

    def reuse(self, other: EventView) -> None:
        """Take the values ``other`` (a view of the same event) has computed already."""
        self._number = other._number

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
            columns = self.columns
            kind = columns.__class__
            text: object
            if kind is SkimColumns:  # a skimmed line: the field
                text = cast(SkimColumns, columns).remote_address
            elif kind is Row:  # a TEXT column: its logged text
                text = cast(Row, columns).text("remote_address")
            else:
                text = columns.get("remote_address")
            number = remembered_address_number(text, _NOT_YET)  # the cache, without a call
            if number == _NOT_YET:
                number = cached_address_number(text)
            self._number = number
        return number

    def hosts(self) -> tuple[str | None, ...]:
        """``hostIdentifier`` then the ``hostname``, ``fqdn``, ``computer_name`` decorations."""
        deco = self.event.decorations
        return (self.event.host_identifier, *(deco.get(k) for k in _HOST_DECORATIONS))


class _Columns(Protocol):
    def get(self, key: str, /) -> ColumnValue: ...


class IndexedRow(Protocol):
    """What the rule index reads of a row (:class:`Keys` ``get``): an
    :class:`EventView`, or a skimmed line (:class:`SkimView`)."""

    @property
    def action(self) -> Action: ...

    @property
    def columns(self) -> _Columns: ...

    @property
    def remote_number(self) -> int | None: ...


class SkimView(SkimLine):
    """A skimmed line (:mod:`alert_service.parse.skim`) read by the rule index as it
    is, without an :class:`EventView`: ``action``, ``columns`` (typed by ``get``) and
    the peer's :attr:`remote_number`. tests/alert_service/match/test_match_pass_over.py
    proves the index's answer equals the one for the line's event."""

    @property
    def remote_number(self) -> int | None:
        """:attr:`EventView.remote_number` of the line's event (not kept: the index
        reads it once)."""
        text = self.columns.remote_address
        number = remembered_address_number(text, _NOT_YET)
        return cached_address_number(text) if number == _NOT_YET else number


skim_view: Callable[[bytes], SkimView | None] = skimmer(SkimView)
""":func:`~alert_service.parse.skim.skim_line` giving a :class:`SkimView`."""

Test = Callable[[EventView], bool]
"""One compiled condition test: True when it holds for the event."""


class In(NamedTuple):
    """A test that is a membership: ``columns.get(column) in allowed`` (run inline)."""

    column: str
    allowed: Container[object]


_Attempt = Callable[[], object]  # one check; raises MatchError with its location


@dataclass(frozen=True, slots=True, eq=False)
class Keys:
    """What an event must show for a condition to hold: the rule index's entry for it.

    The condition can hold only when ``get(view)`` is one of ``values``, inside one of
    ``spans()`` (an ``int``) or fully matched by ``pattern`` or ``regex`` (a non-empty
    ``str``). It
    may still fail on other grounds (the compiled test decides); the index only
    drops rules that cannot match (:mod:`alert_service.match.index`).

    Attributes:
        dimension: names what ``get`` reads (``column:remote_port``, ``text:name``,
            ``address:remote_address``, ``action``); every key of one dimension must
            read the same thing.
        get: the event's value in that dimension.
        rank: lower first: dimensions are looked up by ascending rank, so the cheap
            and selective ones can end the search early.
        values: exact values (hashable; ``None`` and ``""`` for an empty one).
        spans: inclusive integer ranges, called when the index is built (again after
            an IOC file reloads).
        source: identifies ``spans``' content, so rules naming the same lists share
            one entry.
        pattern: a Python regex (translated globs) fully matched against a
            non-empty text value.
        regex: an RE2 regex (the rule's regexes) fully matched likewise.
    """

    dimension: str
    get: Callable[[IndexedRow], object]
    rank: int
    values: frozenset[object] = frozenset()
    spans: Callable[[], list[tuple[int, int]]] | None = None
    source: object = None
    pattern: str | None = None
    regex: str | None = None


KeysOf = Callable[[Any, IocFiles], Iterator[Keys]]
"""``(spec value, iocs)`` → the :class:`Keys` a condition's value gives (none: not indexed)."""


def _no_keys(value: object, iocs: IocFiles) -> Iterator[Keys]:
    return iter(())


@dataclass(frozen=True, slots=True)
class Condition:
    """One rule condition: how it is built, checked and compiled.

    Attributes:
        key: the config key, also the :class:`ConditionsSpec` field.
        build: a validated config value → the spec value.
        checks: ``(spec value, where)`` → the checks of every item, each raising
            :class:`~alert_service.errors.MatchError` located under ``where`` (e.g.
            ``.remote_port``), so that all problems are reported, not the first.
        compile: ``(spec value, where, iocs)`` → ``(cost, test)`` pairs; tests of all
            conditions run by ascending cost. Raises ``MatchError`` like ``checks``.
        needs: spec value → the columns it reads (a rule needing a column that a
            query's rows lack is reported, :mod:`alert_service.match.columns`).
        keys: ``(spec value, iocs)`` → the :class:`Keys` an event must show for the
            condition to hold (exact values, integer ranges, a pattern), by which the
            rule set indexes rules; none for a condition that is only tested. Called
            on a value that compiled.
    """

    key: str
    build: Callable[[Any], Any]
    checks: Callable[[Any, str], Iterator[_Attempt]]
    compile: Callable[[Any, str, IocFiles], Iterator[tuple[int, Test | In]]]
    needs: Callable[[Any], tuple[str, ...]] = field(default=lambda value: ())
    keys: KeysOf = _no_keys


def _text(value: ColumnValue) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _patterns(raw: Mapping[str, Any] | None) -> TextPatternSpec | None:
    if raw is None:
        return None
    return TextPatternSpec(
        exact=tuple(raw.get("exact", ())),
        glob=tuple(raw.get("glob", ())),
        regex=tuple(raw.get("regex", ())),
    )


def _no_checks(value: object, where: str) -> Iterator[_Attempt]:
    return iter(())


def _regex_checks(spec: TextPatternSpec | None, where: str) -> Iterator[_Attempt]:
    for i, text in enumerate(spec.regex if spec is not None else ()):
        yield partial(compile_regex, text, f"{where}.regex[{i}]")


def _number_checks(
    items: Sequence[int | str], where: str, *, maximum: int | None = None, what: str = "port"
) -> Iterator[_Attempt]:
    for i, item in enumerate(items):
        if maximum is None:
            yield partial(parse_number_item, item, f"{where}[{i}]")
        else:
            yield partial(parse_number_item, item, f"{where}[{i}]", maximum=maximum, what=what)


def _text_test(spec: TextPatternSpec, where: str, column: str) -> Test:
    matches = TextMatcher(spec, where).matches
    return lambda view: matches(_text(view.columns.get(column)))


def _column_getter(column: str) -> Callable[[IndexedRow], object]:
    return lambda view: view.columns.get(column)


def _text_getter(column: str) -> Callable[[IndexedRow], object]:
    return lambda view: _text(view.columns.get(column))


def _text_keys(spec: TextPatternSpec, column: str, rank: int) -> Iterator[Keys]:
    """Keys of patterns on one text column (see :class:`~alert_service.match.text.TextMatcher`)."""
    globs = tuple(fnmatch.translate(g) for g in spec.glob)
    if globs and combine_patterns(globs) is None:
        return  # not joinable into one regex: tested only
    if spec.regex and combine_regexes(spec.regex) is None:
        return
    values: set[object] = set(spec.exact)
    if UNKNOWN in spec.exact or UNKNOWN in spec.glob:
        values |= {"", None}
    yield Keys(
        f"text:{column}",
        _text_getter(column),
        rank + (5 if globs or spec.regex else 0),
        frozenset(values),
        pattern="|".join(f"(?:{p})" for p in globs) or None,
        regex="|".join(f"(?:{p})" for p in spec.regex) or None,
    )


def _number_keys(numbers: NumberSet, column: str, rank: int) -> Keys:
    return Keys(
        f"column:{column}",
        _column_getter(column),
        rank,
        frozenset(numbers.singles),
        numbers.spans if numbers.spans() else None,
        source=id(numbers),
    )


# -- the kinds of conditions (a new condition of a known kind is one call) ------------


def text_condition(key: str, column: str, cost: int = 70) -> Condition:
    """Text patterns (:class:`TextPatternSpec`) tried on one text column."""

    def compile_(
        spec: TextPatternSpec, where: str, iocs: IocFiles
    ) -> Iterator[tuple[int, Test | In]]:
        yield cost, _text_test(spec, where, column)

    def keys(spec: TextPatternSpec, iocs: IocFiles) -> Iterator[Keys]:
        return _text_keys(spec, column, 30)

    return Condition(key, _patterns, _regex_checks, compile_, _column(column), keys=keys)


def _column(column: str) -> Callable[[Any], tuple[str, ...]]:
    return lambda value: (column,)


def ports_condition(key: str, column: str, cost: int = 20) -> Condition:
    """Ports (``443``) and inclusive ranges (``"6660-6669"``) on one integer column."""

    def compile_(
        items: Sequence[int | str], where: str, iocs: IocFiles
    ) -> Iterator[tuple[int, Test | In]]:
        ports = PortSet(items, where)
        yield cost, In(column, ports)

    def keys(items: Sequence[int | str], iocs: IocFiles) -> Iterator[Keys]:
        yield _number_keys(PortSet(items), column, 20)

    return Condition(key, tuple, _number_checks, compile_, _column(column), keys=keys)


def numbers_condition(
    key: str, column: str, *, maximum: int, what: str, cost: int = 20
) -> Condition:
    """Numbers and inclusive ranges from 0 to ``maximum`` on one integer column;
    ``what`` names a value in messages (``uid``, ``protocol``)."""

    def checks(items: Sequence[int | str], where: str) -> Iterator[_Attempt]:
        return _number_checks(items, where, maximum=maximum, what=what)

    def compile_(
        items: Sequence[int | str], where: str, iocs: IocFiles
    ) -> Iterator[tuple[int, Test | In]]:
        yield cost, In(column, NumberSet(items, where, maximum=maximum, what=what))

    def keys(items: Sequence[int | str], iocs: IocFiles) -> Iterator[Keys]:
        yield _number_keys(NumberSet(items, maximum=maximum, what=what), column, 40)

    return Condition(key, tuple, checks, compile_, _column(column), keys=keys)


def address_condition(key: str, column: str, cost: int = 50) -> Condition:
    """CIDR and IOC-file include/exclude lists (:class:`AddressSpec`) on one address
    column; an event without an address there never matches."""

    def number(view: EventView) -> int | None:
        return address_number(view.columns.get(column))

    def compile_(spec: AddressSpec, where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
        # The peer's number is cached on the view: several rules test it.
        test = _address_test(
            spec, where, iocs, _remote_number if column == "remote_address" else number
        )
        if test is not None:
            yield cost, test

    def keys(spec: AddressSpec, iocs: IocFiles) -> Iterator[Keys]:
        include = _address_set(spec.include, spec.include_files, "", iocs)
        if include is not None:
            get = _remote_number if column == "remote_address" else number
            yield Keys(
                f"address:{column}",
                cast(Callable[[IndexedRow], object], get),
                10,
                spans=include.spans,
                source=(spec.include, spec.include_files),
            )

    return Condition(key, _build_address, _check_address, compile_, _column(column), keys=keys)


def values_condition(key: str, column: str, cost: int = 30) -> Condition:
    """Allowed values of one text column; ``<unknown>`` stands for an empty one."""

    def compile_(
        values: Sequence[str], where: str, iocs: IocFiles
    ) -> Iterator[tuple[int, Test | In]]:
        allowed: set[object] = {v for v in values if v != UNKNOWN}
        if UNKNOWN in values:
            allowed |= {"", None}  # an empty or missing value
        yield cost, In(column, frozenset(allowed))

    def keys(values: Sequence[str], iocs: IocFiles) -> Iterator[Keys]:
        allowed: set[object] = {v for v in values if v != UNKNOWN}
        if UNKNOWN in values:
            allowed |= {"", None}
        yield Keys(f"column:{column}", _column_getter(column), 50, frozenset(allowed))

    return Condition(key, tuple, _no_checks, compile_, _column(column), keys=keys)


def hostname_condition(key: str, column: str, source_column: str, cost: int = 55) -> Condition:
    """Names, domains, globs, regexes and domain lists (:class:`HostnameSpec`) on a DNS
    name column, with the evidence in ``source_column``
    (:mod:`alert_service.match.hostnames`)."""

    def compile_(spec: HostnameSpec, where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
        yield cost, compile_hostname(spec, where, iocs, column, source_column)

    # No ``needs``: most rows have no name (listeners, addresses not from DNS), so the
    # column watch, which counts an empty value as missing, would report it falsely.
    return Condition(key, build_hostname, check_hostname, compile_)


# -- conditions of their own kind ------------------------------------------------------


def _actions(
    values: Sequence[Action], where: str, iocs: IocFiles
) -> Iterator[tuple[int, Test | In]]:
    allowed = frozenset(values)

    def action_holds(view: EventView) -> bool:
        return view.action in allowed

    _ANSWERED_BY_INDEX.add(action_holds)
    yield 0, action_holds


_ANSWERED_BY_INDEX: weakref.WeakSet[Test] = weakref.WeakSet()
"""Compiled tests the rule index answers exactly: the test of an ``actions``
condition holds exactly when the event's action is one of the values of its
:class:`Keys` (the index's ``action`` dimension, an exact-value lookup)."""


def answered_by_index(test: Test) -> bool:
    """True when ``test`` is a rule's whole filter test (its ``holds``) and the rule
    index answers it exactly: the rule's only condition is ``actions``, so a rule the
    index gives as a candidate passes it. :func:`always_holds` too."""
    return test is always_holds or test in _ANSWERED_BY_INDEX


def _action_of(view: IndexedRow) -> object:
    return view.action


def _action_keys(values: Sequence[Action], iocs: IocFiles) -> Iterator[Keys]:
    yield Keys("action", _action_of, 0, frozenset(values))


def _queries(names: Sequence[str], where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
    if ANY_QUERY in names:
        return  # every query
    allowed = frozenset(names)
    yield 10, lambda view: view.event.name in allowed or view.event.query in allowed


def _host(spec: TextPatternSpec, where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
    matches_any = TextMatcher(spec, where).matches_any
    yield 60, lambda view: matches_any(view.hosts())


def _build_process(raw: Mapping[str, Any]) -> ProcessSpec:
    return ProcessSpec(
        _patterns(raw.get("name")), _patterns(raw.get("path")), _patterns(raw.get("cmdline"))
    )


def _check_process(spec: ProcessSpec, where: str) -> Iterator[_Attempt]:
    yield from _regex_checks(spec.name, f"{where}.name")
    yield from _regex_checks(spec.path, f"{where}.path")
    yield from _regex_checks(spec.cmdline, f"{where}.cmdline")


def _process(spec: ProcessSpec, where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
    for cost, column, patterns in (
        (70, "name", spec.name),
        (71, "path", spec.path),
        (72, "cmdline", spec.cmdline),
    ):
        if patterns is not None:
            yield cost, _text_test(patterns, f"{where}.{column}", column)


def _process_keys(spec: ProcessSpec, iocs: IocFiles) -> Iterator[Keys]:
    for column, patterns in (("name", spec.name), ("path", spec.path), ("cmdline", spec.cmdline)):
        if patterns is not None:
            yield from _text_keys(patterns, column, 30)


def _build_user(raw: Mapping[str, Any]) -> UserSpec:
    uid = raw.get("uid")
    return UserSpec(_patterns(raw.get("name")), tuple(uid) if uid is not None else None)


def _check_user(spec: UserSpec, where: str) -> Iterator[_Attempt]:
    yield from _regex_checks(spec.name, f"{where}.name")
    yield from _number_checks(spec.uid or (), f"{where}.uid", maximum=MAX_UID, what="uid")


def _user(spec: UserSpec, where: str, iocs: IocFiles) -> Iterator[tuple[int, Test | In]]:
    if spec.uid is not None:
        uids = NumberSet(spec.uid, f"{where}.uid", maximum=MAX_UID, what="uid")
        yield 40, In("uid", uids)
    if spec.name is not None:
        yield 73, _text_test(spec.name, f"{where}.name", "username")


def _user_keys(spec: UserSpec, iocs: IocFiles) -> Iterator[Keys]:
    if spec.uid is not None:
        yield _number_keys(NumberSet(spec.uid, maximum=MAX_UID, what="uid"), "uid", 40)
    if spec.name is not None:
        yield from _text_keys(spec.name, "username", 35)


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

    def spans(self) -> list[tuple[int, int]]:
        """Every listed network as inclusive address-number ranges (not merged)."""
        out = self._inline.spans() if self._inline is not None else []
        for ioc in self._lists:
            out += ioc.spans()
        return out

    def _contains(self, number: int) -> bool:
        if self._inline is not None and self._inline.contains_number(number):
            return True
        return any(ioc.contains_number(number) for ioc in self._lists)


def _address_set(
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


def _build_address(raw: Mapping[str, Any]) -> AddressSpec:
    return AddressSpec(
        tuple(raw.get("include", ())),
        tuple(raw.get("exclude", ())),
        tuple(raw.get("include_files", ())),
        tuple(raw.get("exclude_files", ())),
    )


def _check_ioc_file(path: str, where: str) -> None:
    try:
        load_ioc_file(path)
    except MatchError as err:
        raise MatchError(str(err), where) from err


def _check_address(spec: AddressSpec, where: str) -> Iterator[_Attempt]:
    for key in ("include", "exclude"):
        for i, text in enumerate(getattr(spec, key)):
            yield partial(parse_network, text, f"{where}.{key}[{i}]")
        for i, path in enumerate(getattr(spec, f"{key}_files")):
            yield partial(_check_ioc_file, path, f"{where}.{key}_files[{i}]")


_remote_number: Callable[[EventView], int | None] = attrgetter("remote_number")


def _address_test(
    spec: AddressSpec, where: str, iocs: IocFiles, number_of: Callable[[EventView], int | None]
) -> Test | None:
    include = _address_set(spec.include, spec.include_files, f"{where}.include", iocs)
    exclude = _address_set(spec.exclude, spec.exclude_files, f"{where}.exclude", iocs)
    if include is None and exclude is None:
        return None

    def test(view: EventView) -> bool:
        number = number_of(view)
        if number is None:
            return False  # no address: an address condition never holds
        if include is not None and not include.contains(number):
            return False
        return exclude is None or not exclude.contains(number)

    return test


def _build_any_of(raw: Sequence[Any]) -> tuple[ConditionsSpec, ...]:
    return tuple(
        ConditionsSpec(**conditions_from_config(item))
        if isinstance(item, Mapping)
        else ConditionsSpec()
        for item in raw
    )


def _condition_checks(spec: ConditionsSpec, where: str) -> Iterator[_Attempt]:
    for condition in CONDITIONS:
        value = getattr(spec, condition.key)
        if value is not None:
            yield from condition.checks(value, f"{where}.{condition.key}")


def _check_any_of(specs: Sequence[ConditionsSpec], where: str) -> Iterator[_Attempt]:
    for i, spec in enumerate(specs):
        yield from _condition_checks(spec, f"{where}[{i}]")


def _any_of_needs(specs: Sequence[ConditionsSpec]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for spec in specs:
        for condition in CONDITIONS:
            value = getattr(spec, condition.key)
            if value is not None:
                out.update(dict.fromkeys(condition.needs(value)))
    return tuple(out)


def _any_of(
    specs: Sequence[ConditionsSpec], where: str, iocs: IocFiles
) -> Iterator[tuple[int, Test | In]]:
    tests = tuple(
        CompiledConditions(spec, f"{where}[{i}]", iocs).holds for i, spec in enumerate(specs)
    )
    yield 90, lambda view: any(test(view) for test in tests)


# -- the table -----------------------------------------------------------------------

CONDITIONS: tuple[Condition, ...] = (
    Condition("actions", tuple, _no_checks, _actions, keys=_action_keys),
    Condition("queries", tuple, _no_checks, _queries),
    Condition("host", _patterns, _regex_checks, _host),
    Condition(
        "process",
        _build_process,
        _check_process,
        _process,
        lambda spec: tuple(
            column
            for column in ("name", "path", "cmdline")
            if getattr(spec, column) is not None
        ),
        keys=_process_keys,
    ),
    Condition(
        "user",
        _build_user,
        _check_user,
        _user,
        lambda spec: (("username",) if spec.name is not None else ())
        + (("uid",) if spec.uid is not None else ()),
        keys=_user_keys,
    ),
    address_condition("remote_address", "remote_address"),
    ports_condition("remote_port", "remote_port"),
    values_condition("direction", "direction"),
    address_condition("local_address", "local_address"),
    ports_condition("local_port", "local_port"),
    numbers_condition("protocol", "protocol", maximum=65535, what="protocol"),
    numbers_condition("family", "family", maximum=65535, what="family"),
    values_condition("state", "state"),
    values_condition("status", "status"),
    text_condition("parent_name", "parent_name", cost=74),
    text_condition("parent_path", "parent_path", cost=75),
    hostname_condition("remote_hostname", "remote_hostname", "remote_hostname_source"),
    Condition("any_of", _build_any_of, _check_any_of, _any_of, _any_of_needs),
)
"""Every rule condition, in the order their problems are reported. Each ``key`` is a
field of :class:`ConditionsSpec` and a property of ``$defs.conditions`` in
schema/config.schema.json."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionsSpec:
    """A set of ANDed conditions; an absent (None) condition always holds.

    Also one entry of a rule's ``exclude`` list, where ``actions`` None means any action.

    Attributes:
        actions: event actions that may match.
        queries: query names; the event's full name or its query part must be one
            (``*``: any query). A rule without it gets the config's top-level
            ``queries`` (the pack's query by default).
        host: patterns tried on ``hostIdentifier``, then the ``hostname``, ``fqdn`` and
            ``computer_name`` decorations (:data:`~alert_service.match.spec.HOST_FIELDS`);
            any match holds.
        process: patterns for the ``name``/``path``/``cmdline`` columns.
        user: ``username`` patterns and ``uid`` ranges.
        remote_address: CIDR / IOC-file include and exclude lists for ``remote_address``.
        remote_port: ports (``443``) and inclusive ranges (``"6660-6669"``).
        direction: allowed ``direction`` values (``<unknown>`` for an empty one).
        local_address: CIDR / IOC-file include and exclude lists for ``local_address``.
        local_port: ports and inclusive ranges for ``local_port``.
        protocol: IP protocol numbers and ranges (``6`` TCP, ``17`` UDP; a packet
            socket's Ethernet protocol) for ``protocol``.
        family: address families (``2`` IPv4, ``10`` IPv6, ``17`` packet) for ``family``.
        state: allowed TCP ``state`` values (``ESTABLISHED``, ``LISTEN``...;
            ``<unknown>`` for an empty one, as UDP sockets have).
        status: allowed ``status`` values, how a TCP attempt ended (``connected``,
            ``refused``, ``unreachable``, ``timed_out``; ``<unknown>`` for an empty one).
        parent_name: patterns for the ``parent_name`` column.
        parent_path: patterns for the ``parent_path`` column.
        remote_hostname: names, domains, patterns and domain lists for
            ``remote_hostname``, and the evidence ``remote_hostname_source`` must give
            (:mod:`alert_service.match.hostnames`).
        any_of: condition sets of which at least one must hold (each ANDed inside;
            ``actions`` default to any): e.g. an address list *or* a domain list.
    """

    actions: tuple[Action, ...] | None = None
    queries: tuple[str, ...] | None = None
    host: TextPatternSpec | None = None
    process: ProcessSpec | None = None
    user: UserSpec | None = None
    remote_address: AddressSpec | None = None
    remote_port: tuple[int | str, ...] | None = None
    direction: tuple[Direction, ...] | None = None
    local_address: AddressSpec | None = None
    local_port: tuple[int | str, ...] | None = None
    protocol: tuple[int | str, ...] | None = None
    family: tuple[int | str, ...] | None = None
    state: tuple[str, ...] | None = None
    status: tuple[Status, ...] | None = None
    parent_name: TextPatternSpec | None = None
    parent_path: TextPatternSpec | None = None
    remote_hostname: HostnameSpec | None = None
    any_of: tuple[ConditionsSpec, ...] | None = None


@dataclass(frozen=True, slots=True)
class RuleSpec(ConditionsSpec):
    """One rule; its conditions (:class:`ConditionsSpec`) are ANDed.

    Attributes:
        name: unique rule name, reported in alerts.
        notify: names of the notifiers that receive its alerts.
        actions: as in :class:`ConditionsSpec`, default only ``added``.
        exclude: condition sets that veto the rule when any one of them holds.
        dedup_window_secs: this rule's dedup window in seconds, overriding
            ``delivery.dedup_window_secs``; None keeps the global one.
        baseline: what to do with a genuinely new row of a ``counter`` 0 run
            (:data:`~alert_service.match.spec.BaselineMode`; default ``alert``).
        enabled: False keeps the rule in the config (still checked) but never matches.
        severity: the rule's :data:`~alert_service.match.spec.Severity`, carried by its
            alerts to every notifier; None when the rule sets none.
    """

    name: str
    notify: tuple[str, ...]
    actions: tuple[Action, ...] | None = field(default=("added",), kw_only=True)
    exclude: tuple[ConditionsSpec, ...] = field(default=(), kw_only=True)
    dedup_window_secs: float | None = field(default=None, kw_only=True)
    baseline: BaselineMode = field(default=DEFAULT_BASELINE_MODE, kw_only=True)
    enabled: bool = field(default=True, kw_only=True)
    severity: Severity | None = field(default=None, kw_only=True)


def conditions_from_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The spec values of the conditions present in ``raw`` (a validated rule or entry)."""
    out: dict[str, Any] = {}
    for condition in CONDITIONS:
        value = raw.get(condition.key)
        if value is not None:
            out[condition.key] = condition.build(value)
    return out


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
        ConditionsSpec(**conditions_from_config(item))
        if isinstance(item, Mapping)
        else ConditionsSpec()
        for item in raw.get("exclude", ())
    )
    window = raw.get("dedup_window_secs")
    conditions = conditions_from_config(raw)
    conditions.setdefault("actions", ("added",))
    return RuleSpec(
        name=raw.get("name", ""),
        notify=tuple(raw.get("notify", ())),
        exclude=excludes,
        dedup_window_secs=float(window) if window is not None else None,
        baseline=cast(BaselineMode, raw.get("baseline", DEFAULT_BASELINE_MODE)),
        enabled=raw.get("enabled", True) is not False,
        severity=cast("Severity | None", raw.get("severity")),
        **conditions,
    )


def check_conditions(spec: ConditionsSpec, where: str, errors: list[MatchError]) -> None:
    """Append every problem of ``spec``'s conditions to ``errors``, in table order.

    Args:
        spec: the conditions.
        where: their place in the rule (``""`` or ``.exclude[0]``).
        errors: where the problems go (``err.where`` locates each).
    """
    for condition in CONDITIONS:
        value = getattr(spec, condition.key)
        if value is None:
            continue
        for check in condition.checks(value, f"{where}.{condition.key}"):
            try:
                check()
            except MatchError as err:
                errors.append(err)


def always_holds(view: EventView) -> bool:
    """The test of a rule without conditions (callers may skip calling it)."""
    return True


def _all_of(members: Sequence[In], tests: Sequence[Test]) -> Test:
    """One test that holds when all of ``members`` and then all of ``tests`` do.

    The common short lists get a straight-line function: one call per event.
    """
    if not members:
        if not tests:
            return always_holds
        if len(tests) == 1:
            return tests[0]
        if len(tests) == 2:
            a, b = tests
            return lambda view: a(view) and b(view)
    if len(members) == 1:
        ((column, allowed),) = members
        if not tests:
            return lambda view: view.columns.get(column) in allowed
        if len(tests) == 1:
            (a,) = tests
            return lambda view: view.columns.get(column) in allowed and a(view)

    def holds(view: EventView) -> bool:
        get = view.columns.get
        for column, allowed in members:
            if get(column) not in allowed:
                return False
        for test in tests:  # noqa: SIM110 - all() would build a generator per event
            if not test(view):
                return False
        return True

    return holds


class CompiledConditions:
    """ANDed conditions of a rule or of one of its ``exclude`` entries.

    Tests run cheapest first; an absent condition always holds.

    Args:
        spec: the conditions as configured.
        where: location of ``spec`` in the rule (``""`` or ``.exclude[0]``) for errors.
        iocs: where IOC files are loaded (shared by the rule set).

    Attributes:
        holds: ``holds(view)`` is True when every configured condition holds. An
            address condition never holds for an event without a peer address (empty,
            unparsable, ``0.0.0.0`` or ``::``); a ``remote_hostname`` condition never
            holds for an event without a name. A missing text column satisfies a
            pattern only through the literal ``<unknown>``; a missing ``uid`` never
            satisfies ``uid``.

    Raises:
        MatchError: a CIDR, port, range, regex or IOC file is invalid; ``err.where`` is
            the path inside the rule (e.g. ``.remote_address.include[1]``).
    """

    __slots__ = ("holds",)

    def __init__(self, spec: ConditionsSpec, where: str, iocs: IocFiles) -> None:
        ordered: list[tuple[int, int, Test | In]] = []
        for condition in CONDITIONS:
            value = getattr(spec, condition.key)
            if value is None:
                continue
            for cost, test in condition.compile(value, f"{where}.{condition.key}", iocs):
                ordered.append((cost, len(ordered), test))
        ordered.sort(key=lambda item: item[:2])
        tests = [test for _, _, test in ordered]
        self.holds: Test = _all_of(
            [t for t in tests if isinstance(t, In)], [t for t in tests if not isinstance(t, In)]
        )
