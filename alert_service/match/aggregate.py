"""Aggregation rules: alerts over many rows (scans, sweeps, lateral movement, beacons).

A row rule judges one event; an aggregation rule counts the events that pass its
filter (the same conditions as a row rule, :mod:`alert_service.match.conditions`) per
*group* (the values of its ``group_by`` fields) and alerts once when a group crosses a
threshold inside a window. Kinds (docs/rules.md, "Aggregation rules"):

* ``event_count``: rows counted; Sigma correlation ``type: event_count``.
* ``value_count``: distinct values of ``field`` counted; Sigma ``type: value_count``.
* ``beacon``: connection start times of the group scored for a regular period.

Windows of ``event_count`` / ``value_count`` are *anchored*: a group's window opens
at its first counted event (time ``t0``, the line's ``unixTime``) and covers
``[t0, t0 + window_secs)``; the first event at or after its end closes it and opens the
next window at that event. At most one alert per group and window.

:class:`Aggregator` keeps the groups in memory, bounded by ``max_groups`` per rule
(events of new groups beyond it are dropped and counted in ``dropped``), and marks
every changed group dirty so :mod:`alert_service.state.windows` stores it in the
transaction of the batch that changed it. A group's state is a
:class:`~alert_service.match.groups.Group` (JSON-able: :meth:`Group.to_doc` /
:meth:`Group.from_doc`). A window that ended is kept until its rule needs the room.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final, Literal, cast

from alert_service.errors import MatchError
from alert_service.match.alert import Alert
from alert_service.match.conditions import (
    EventView,
    RuleSpec,
    answered_by_index,
    rule_spec_from_config,
)
from alert_service.match.groups import Group, group_key, values_of
from alert_service.match.index import RuleIndex
from alert_service.match.iocs import IocFiles
from alert_service.match.rules import CompiledRule, check_rule
from alert_service.parse.event import ColumnValue, Event
from alert_service.parse.row import typed_columns

__all__ = [
    "AGGREGATE_KINDS",
    "AggregateAlert",
    "AggregateRule",
    "AggregateSpec",
    "Aggregator",
    "Group",
    "aggregate_rule_from_config",
    "check_aggregate_rule",
    "is_aggregate_item",
]

AggregateKind = Literal["event_count", "value_count", "beacon"]
AGGREGATE_KINDS: Final[tuple[AggregateKind, ...]] = ("event_count", "value_count", "beacon")

DEFAULT_MAX_GROUPS: Final = 10_000
DEFAULT_SAMPLE_ROWS: Final = 10
HOST: Final = "host"
"""``group_by`` name of the line's ``hostIdentifier``; other names are columns."""

BEACON_GROUP_BY: Final = (HOST, "pid", "start_time", "remote_address", "remote_port")
"""Default ``group_by`` of a beacon rule: one process (pid and start time) and peer."""

_ROW_KEY_COLUMNS = ("pid", "socket", "local_address", "local_port", "remote_address",
                    "remote_port", "first_seen")  # fmt: skip
_row_key_items = itemgetter(*_ROW_KEY_COLUMNS)


def _row_key(columns: Mapping[str, ColumnValue]) -> tuple[ColumnValue, ...]:
    """The key of a counted row: its :data:`_ROW_KEY_COLUMNS` values (None for a
    column it lacks). Inlined on the hot path as ``_row_key_items(columns)`` (one C
    call) with this as the fallback when a column is missing (``KeyError``)."""
    return tuple(map(columns.get, _ROW_KEY_COLUMNS))


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """What an aggregation rule counts (the ``aggregate`` or ``beacon`` mapping).

    Attributes:
        kind: ``event_count``, ``value_count`` or ``beacon``.
        group_by: fields whose values form the group: ``host`` or column names.
        field: the column whose distinct values are counted (``value_count``).
        threshold: count at or above which the group alerts (Sigma ``gte``).
        window_secs: window length, seconds.
        max_groups: groups kept per rule at most.
        sample_rows: rows carried in the alert at most.
        min_connections: beacon: connections needed in the window.
        min_period_secs: beacon: shortest median period that counts, seconds.
        jitter_secs: beacon: an interval within this of the median is regular, seconds.
        jitter_ratio: beacon: ... or within this fraction of the median.
        min_score: beacon: fraction of regular intervals needed (0-1].
    """

    kind: AggregateKind
    group_by: tuple[str, ...]
    window_secs: float
    threshold: int = 0
    field: str | None = None
    max_groups: int = DEFAULT_MAX_GROUPS
    sample_rows: int = DEFAULT_SAMPLE_ROWS
    min_connections: int = 0
    min_period_secs: float = 10.0
    jitter_secs: float = 2.0
    jitter_ratio: float = 0.1
    min_score: float = 0.8


@dataclass(frozen=True, slots=True)
class AggregateRule:
    """One aggregation rule: a filter (a row rule's conditions) plus what it counts.

    Attributes:
        name: unique rule name (shared namespace with row rules).
        notify: notifier names.
        filter: the conditions an event must pass to be counted (its ``name`` and
            ``notify`` are the rule's).
        spec: what is counted.
        dedup_window_secs: the rule's own dedup window, or None for delivery's.
    """

    name: str
    notify: tuple[str, ...]
    filter: RuleSpec
    spec: AggregateSpec
    dedup_window_secs: float | None = None


def is_aggregate_item(raw: Mapping[str, Any]) -> bool:
    """True when a configured rule is an aggregation rule (has ``aggregate`` or ``beacon``)."""
    return "aggregate" in raw or "beacon" in raw


def aggregate_rule_from_config(raw: Mapping[str, Any]) -> AggregateRule:
    """Build an :class:`AggregateRule` from a schema-checked rule mapping."""
    base = {k: v for k, v in raw.items() if k not in ("aggregate", "beacon", "baseline")}
    filter_spec = rule_spec_from_config(base)
    if "beacon" in raw:
        b = raw.get("beacon") or {}
        spec = AggregateSpec(
            kind="beacon",
            group_by=tuple(b.get("group_by", BEACON_GROUP_BY)),
            window_secs=float(b.get("window_secs", 3600)),
            max_groups=int(b.get("max_groups", DEFAULT_MAX_GROUPS)),
            sample_rows=int(b.get("sample_rows", DEFAULT_SAMPLE_ROWS)),
            min_connections=int(b.get("min_connections", 8)),
            min_period_secs=float(b.get("min_period_secs", 10)),
            jitter_secs=float(b.get("jitter_secs", 2)),
            jitter_ratio=float(b.get("jitter_ratio", 0.1)),
            min_score=float(b.get("min_score", 0.8)),
        )
    else:
        a = raw.get("aggregate") or {}
        spec = AggregateSpec(
            kind=cast(AggregateKind, a.get("type", "event_count")),
            group_by=tuple(a.get("group_by", ())),
            field=a.get("field"),
            threshold=int(a.get("threshold", 1)),
            window_secs=float(a.get("window_secs", 300)),
            max_groups=int(a.get("max_groups", DEFAULT_MAX_GROUPS)),
            sample_rows=int(a.get("sample_rows", DEFAULT_SAMPLE_ROWS)),
        )
    window = raw.get("dedup_window_secs")
    return AggregateRule(
        name=filter_spec.name,
        notify=filter_spec.notify,
        filter=filter_spec,
        spec=spec,
        dedup_window_secs=float(window) if window is not None else None,
    )


def check_aggregate_rule(rule: AggregateRule) -> list[MatchError]:
    """Every problem of ``rule`` (its filter's, then its counting's), located in the rule."""
    errors = check_rule(rule.filter)
    spec = rule.spec
    if spec.kind == "beacon":
        return errors
    if spec.kind == "value_count" and not spec.field:
        errors.append(MatchError("value_count needs 'field'", ".aggregate.field"))
    if spec.kind == "event_count" and spec.field:
        errors.append(
            MatchError(
                "'field' is only for value_count (event_count counts rows)", ".aggregate.field"
            )
        )
    if spec.field is not None and spec.field in spec.group_by:
        errors.append(
            MatchError(f"{spec.field!r} is both counted and grouped by", ".aggregate.field")
        )
    return errors


@dataclass(frozen=True, slots=True)
class AggregateAlert(Alert):
    """An alert of an aggregation rule: one group crossing its threshold in one window.

    ``event`` is the crossing event with its columns replaced by the group's column
    values (so dedup keys, placeholders and Fleet look-ups see the group).

    Attributes:
        kind: the rule's kind.
        group: group field → value.
        count: events (``event_count``), distinct values (``value_count``) or
            connections (``beacon``) when the threshold was crossed.
        first_time: unixTime of the window's first counted event, seconds.
        last_time: unixTime of the crossing event, seconds.
        sample: up to ``sample_rows`` of the counted rows, in log order.
        detail: kind-specific numbers (threshold, window_secs, field; beacon:
            period_secs, score, jitter_secs).
    """

    kind: str = "event_count"
    group: Mapping[str, ColumnValue] = field(default_factory=dict)
    count: int = 0
    first_time: int = 0
    last_time: int = 0
    sample: tuple[Mapping[str, ColumnValue], ...] = ()
    detail: Mapping[str, Any] = field(default_factory=dict)

    def aggregate_doc(self) -> dict[str, Any]:
        """The ``aggregate`` part of the payload (see :meth:`as_dict`)."""
        return {
            "type": self.kind,
            "group": dict(self.group),
            "count": self.count,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "sample": [dict(row) for row in self.sample],
            **self.detail,
        }

    def as_dict(self) -> dict[str, Any]:
        """:meth:`Alert.as_dict` plus ``"kind": "aggregate"`` and ``"aggregate"``:
        ``{"type", "group", "count", "first_time", "last_time", "sample": [{column:
        value}], "threshold", "window_secs", ["field"], [beacon: "period_secs",
        "score", "tolerance_secs"]}``."""
        doc = Alert.as_dict(self)
        doc["kind"] = "aggregate"
        doc["aggregate"] = self.aggregate_doc()
        return doc


def _start_of(item: list[Any]) -> int:
    """A beacon time entry's start time, seconds (its sort key)."""
    return int(item[0])


def _group_values(
    event: Event, columns: Mapping[str, ColumnValue], fields: Sequence[str]
) -> tuple[ColumnValue, ...]:
    return tuple(event.host_identifier if f == HOST else columns.get(f) for f in fields)


_GroupOf = Callable[[Event, Mapping[str, ColumnValue]], tuple[ColumnValue, ...]]


def _group_getter(fields: Sequence[str]) -> _GroupOf:
    """A fast :func:`_group_values` for ``fields`` (``host`` first or absent: one C call)."""
    if HOST not in fields:
        names = tuple(fields)
        return lambda event, columns: tuple(map(columns.get, names))
    if fields == (HOST,):
        return lambda event, columns: (event.host_identifier,)
    if len(fields) == 2 and fields[0] == HOST and fields[1] != HOST:
        other = fields[1]  # the commonest shape: no map object, no unpacking
        return lambda event, columns: (event.host_identifier, columns.get(other))
    if fields[0] == HOST and HOST not in fields[1:]:
        rest = tuple(fields[1:])
        return lambda event, columns: (event.host_identifier, *map(columns.get, rest))
    return lambda event, columns: _group_values(event, columns, fields)


_Key = tuple[ColumnValue, ...]


def _alert_id(rule: str, key: str, start: int) -> str:
    blob = json.dumps([rule, key, start], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_Counter = Callable[[Event, Mapping[str, ColumnValue], int], "AggregateAlert | None"]
"""Counts one event that passed a rule's filter: ``(event, typed columns, unixTime)``."""


_First = tuple[Any, ...]
"""A group that has counted one event, held as one tuple instead of a
:class:`Group` and its containers (:meth:`_RuleState.full` builds that group):

* ``event_count``: ``(start, row key, row)``;
* ``value_count``: ``(start, value, row)``, or ``(start, None, None)`` when the event's
  value was empty (the window is open, nothing counted);
* ``beacon``: ``(start, connection start, row key as a list, row)``.

``start`` is also the group's ``last``; ``count`` is 1 (0 for an empty value),
``fired`` 0, the sample the row (when ``sample_rows`` > 0). Most groups of a scan or
beacon rule never see a second event; a tuple is one object where a group is three or
four, so far less memory is held and scanned by the garbage collector. A second
event turns it into the :class:`Group` first. Not used when the first event can
cross the threshold (``threshold`` 1)."""


class _RuleState:
    """One rule compiled, with its groups and its counting function.

    ``groups`` is a plain dict in the order the windows opened (``event_count`` and
    ``value_count``: a new window is put at the end) or were last changed
    (``beacon``): its front holds the groups to expire first. A value is a
    :class:`Group` or, for a group that counted one event, a :data:`_First` tuple.
    """

    __slots__ = ("cheap", "compiled", "count", "dirty", "group_of", "groups", "rule", "spec")

    def __init__(self, rule: AggregateRule, compiled: CompiledRule) -> None:
        self.rule = rule
        self.spec = rule.spec
        self.group_of = _group_getter(rule.spec.group_by)
        self.dirty: set[_Key] = set()
        self.compiled = compiled
        self.groups: dict[_Key, Group | _First] = {}
        self.count: _Counter = _no_count
        spec = rule.spec
        self.cheap = spec.min_connections > 1 if spec.kind == "beacon" else spec.threshold > 1
        """A new group is a :data:`_First` tuple (its first event cannot alert)."""

    def expired(self, group: Group | _First, now: int) -> bool:
        if group.__class__ is tuple:
            start = group[0]
            return start + self.spec.window_secs <= now and (self.spec.kind != "beacon" or now >= 0)
        group = cast(Group, group)
        if self.spec.kind == "beacon":
            return group.last + self.spec.window_secs <= now and group.fired <= now
        return group.start + self.spec.window_secs <= now

    def full(self, item: Group | _First) -> Group:
        """``item`` as a :class:`Group` (a new one for a :data:`_First` tuple)."""
        if item.__class__ is not tuple:
            return cast(Group, item)
        first = item
        spec = self.spec
        keep = spec.sample_rows > 0
        if spec.kind == "beacon":
            start, at, row, columns = first
            return Group(
                start,
                start,
                values=_UNUSED_VALUES,
                rows=_UNUSED_ROWS,
                times=[[at, row]],
                sample=[columns] if keep else [],
            )
        start, counted, columns = first
        sample = [columns] if keep and columns is not None else []
        if spec.kind == "value_count":
            values: dict[ColumnValue, None] = {} if counted is None else {counted: None}
            return Group(
                start,
                start,
                count=len(values),
                values=values,
                rows=_UNUSED_ROWS,
                times=_UNUSED_TIMES,
                sample=sample,
            )
        return Group(
            start,
            start,
            count=1,
            values=_UNUSED_VALUES,
            rows={counted: None},
            times=_UNUSED_TIMES,
            sample=sample,
        )


_UNUSED_VALUES: Final[dict[ColumnValue, None]] = {}
_UNUSED_ROWS: Final[dict[tuple[ColumnValue, ...], None]] = {}
_UNUSED_TIMES: Final[list[list[Any]]] = []
"""Shared empty containers for the parts of a :class:`Group` its kind never fills (a
group is built per new window: three containers fewer). Never changed: the counting
code writes ``values`` only for ``value_count``, ``rows`` only for ``event_count``
before the crossing, ``times`` only for ``beacon``."""


_Step = tuple["Callable[[EventView], bool] | None", "Callable[[EventView], bool] | None", _Counter]
"""One candidate rule of an event: ``(filter test, exclude test, counting function)``."""

_PLANS: Final = 4096
"""Candidate masks whose :data:`_Step` tuples an :class:`Aggregator` remembers."""


def _no_count(event: Event, columns: Mapping[str, ColumnValue], now: int) -> None:
    return None


class Aggregator:
    """Count events per rule and group; return an alert per group and window crossing.

    An event is tried only on the rules its values can match: a
    :class:`~alert_service.match.index.RuleIndex` of the rules' filters looks each
    kind of condition up once per event (shared by every rule that has it), then the
    candidates' filters are tested in full. The counting of each rule is a closure
    specialised for its kind (``_counter``); :class:`Reference` in
    tests/alert_service/aggregate proves the result equal to the plain semantics of
    docs/rules.md on random streams.

    Args:
        rules: the aggregation rules.
        iocs: the IOC files of the row rules (:attr:`RuleSet.iocs
            <alert_service.match.rules.RuleSet.iocs>`), so that a list is loaded once
            and a new version counts for both kinds of rule; the owner checks them
            (:meth:`RuleSet.match` does). None: files of its own, checked here at most
            every second.
        first_as_tuple: hold a group that counted one event as a tuple
            (:data:`_First`); False: every group a :class:`Group` from its first
            event (the plain form, which tests/alert_service/aggregate compares it with).

    Attributes:
        dropped: events of new groups dropped because a rule held ``max_groups``.

    Raises:
        MatchError: a filter does not compile (the message names the rule).
    """

    def __init__(
        self,
        rules: Iterable[AggregateRule],
        iocs: IocFiles | None = None,
        *,
        first_as_tuple: bool = True,
    ) -> None:
        self._iocs = iocs if iocs is not None else IocFiles()
        self._own_iocs = iocs is None
        self._generation = self._iocs.generation
        states: list[_RuleState] = []
        for rule in rules:
            if not rule.filter.enabled:
                continue  # ``enabled: false``: checked, never counted
            try:
                states.append(_RuleState(rule, CompiledRule(rule.filter, self._iocs)))
            except MatchError as err:
                raise MatchError(f"rule {rule.name!r}: {err}", err.where) from err
            states[-1].cheap &= first_as_tuple
        self._rules = tuple(states)
        for state in states:
            state.count = self._counter(state)
        # CompiledRule.matches without its per-call checks (as RuleSet.match runs it).
        self._tests = tuple(
            (s, s.compiled._conditions.holds, _veto_of(s.compiled), s.count) for s in states
        )
        self._index = RuleIndex([s.compiled.keys for s in states])
        self._plans: dict[int, tuple[_Step, ...]] = {}
        self._by_name = {s.rule.name: s for s in states}
        self.dropped = 0
        self._removed: set[tuple[str, _Key]] = set()
        self._now = 0

    def __bool__(self) -> bool:
        return bool(self._rules)

    @property
    def rule_names(self) -> tuple[str, ...]:
        """Names of the rules, in configuration order."""
        return tuple(s.rule.name for s in self._rules)

    def group_count(self, rule: str) -> int:
        """Groups held in memory for ``rule``."""
        return len(self._by_name[rule].groups)

    # -- persistence hooks -------------------------------------------------------

    def load(self, rule: str, key: str, group: Group) -> None:
        """Put a stored group back (at start); groups of unknown rules are ignored."""
        state = self._by_name.get(rule)
        if state is not None:
            state.groups[values_of(key)] = group
            self._now = max(self._now, group.last)

    def clear(self) -> None:
        """Forget every group (before reloading after a rolled-back transaction)."""
        for state in self._rules:
            state.groups.clear()
        self._removed.clear()
        for state in self._rules:
            state.dirty.clear()

    def group(self, rule: str, key: str) -> Group | None:
        """The group ``key`` of ``rule``, or None."""
        state = self._by_name[rule]
        item = state.groups.get(values_of(key))
        return None if item is None else state.full(item)

    def take_changes(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Return and reset (changed, dropped) as (rule, stored group key) pairs."""
        changed, removed = self.take_changed_groups()
        return {(rule, key) for rule, key, _ in changed}, set(removed)

    @property
    def pending_changes(self) -> int:
        """Changed and dropped groups not yet taken (:meth:`take_changed_keys`)."""
        return sum(len(s.dirty) for s in self._rules) + len(self._removed)

    def discard_changes(self) -> None:
        """Forget the changes not yet taken: nothing stores them (``replay``, the
        in-memory loop), and they would otherwise grow by one key per group opened."""
        for state in self._rules:
            state.dirty.clear()  # in place: the counting closures hold its ``add``
        self._removed.clear()

    def take_changed_groups(
        self,
    ) -> tuple[list[tuple[str, str, Group]], list[tuple[str, str]]]:
        """Return and reset the changes since the last call.

        A group whose window is over is kept (a late line still counts in it, as
        docs/rules.md says) until a new group of its rule needs the room
        (``max_groups``): the stored groups are exactly those held in memory.

        Returns:
            ``([(rule, stored group key, group)], [(rule, stored group key)])``: the
            groups changed since the last call and still held, then the groups
            dropped to make room and not held again.
        """
        changed, removed = self.take_changed_keys()
        return (
            [(rule, group_key(key), group) for rule, key, group in changed],
            [(rule, group_key(key)) for rule, key in removed],
        )

    def take_changed_keys(
        self,
    ) -> tuple[list[tuple[str, _Key, Group]], list[tuple[str, _Key]]]:
        """:meth:`take_changed_groups` with each group's values as a tuple, not its
        stored key (the caller encodes them in bulk)."""
        removed_keys = self._removed
        changed: list[tuple[str, _Key, Group]] = []
        for state in self._rules:
            name = state.rule.name
            get = state.groups.get
            full = state.full
            for key in state.dirty:
                held = get(key)
                if held is not None:
                    changed.append((name, key, full(held)))
                    removed_keys.discard((name, key))
            state.dirty.clear()  # in place: the counting closures hold its ``add``
        self._removed = set()
        return changed, list(removed_keys)

    def held_groups(self, rule: str) -> dict[_Key, Group]:
        """The groups of ``rule`` held now (a copy of the mapping; values by group
        values), oldest first."""
        state = self._by_name[rule]
        return {key: state.full(item) for key, item in state.groups.items()}

    def held(self, rule: str, key: _Key) -> Group | None:
        """The group of ``rule`` whose values are ``key``, or None (also for an unknown
        rule)."""
        state = self._by_name.get(rule)
        if state is None:
            return None
        item = state.groups.get(key)
        return None if item is None else state.full(item)

    def put(self, rule: str, key: _Key, group: Group | None) -> None:
        """Replay one stored change: ``group`` becomes the newest of its rule (None: the
        group is dropped). Changes of unknown rules are ignored."""
        state = self._by_name.get(rule)
        if state is None:
            return
        state.groups.pop(key, None)
        if group is not None:
            state.groups[key] = group
            self._now = max(self._now, group.last)

    # -- counting ----------------------------------------------------------------

    def observe(self, event: Event, view: EventView | None = None) -> list[AggregateAlert]:
        """Count ``event`` in every rule whose filter it passes; return new crossings.

        ``view``: the event's :class:`EventView` shared with the row rules, or None.
        """
        if view is None:
            view = EventView(event)
        if self._own_iocs:
            self._iocs.maybe_check()
        if self._iocs.generation != self._generation:  # a list changed: its ranges too
            self._generation = self._iocs.generation
            self._index = RuleIndex([s.compiled.keys for s in self._rules])
        now = event.unix_time
        if now > self._now:  # noqa: PLR1730 - max() is a call per event
            self._now = now
        mask = self._index.candidates(view)
        if not mask:
            return []
        plan = self._plans.get(mask)
        if plan is None:
            plan = self._plan(mask)
        out: list[AggregateAlert] = []
        columns: Mapping[str, ColumnValue] | None = None
        for holds, vetoed, count in plan:
            if (holds is None or holds(view)) and (vetoed is None or not vetoed(view)):
                if columns is None:
                    columns = typed_columns(event.columns)
                alert = count(event, columns, now)
                if alert is not None:
                    out.append(alert)
        return out

    def _plan(self, mask: int) -> tuple[_Step, ...]:
        """The candidates of ``mask`` as ``(filter test or None when the index answers
        it, exclude test or None, counting function)``, in rule order;
        remembered per mask (at most :data:`_PLANS` masks, forgotten all at once
        when full): an event's candidates are one dict lookup and a walk over a
        tuple, not a bit at a time."""
        plan: list[_Step] = []
        rest = mask
        while rest:
            low = rest & -rest
            rest ^= low
            _, holds, vetoed, count = self._tests[low.bit_length() - 1]
            plan.append((None if answered_by_index(holds) else holds, vetoed, count))
        if len(self._plans) >= _PLANS:
            self._plans.clear()
        found = self._plans[mask] = tuple(plan)
        return found

    def _room(self, state: _RuleState, now: int) -> bool:
        """Whether the rule has room for a new group at ``now`` (after dropping the
        oldest ended windows if it is full); counts the event dropped if not."""
        groups = state.groups
        if len(groups) >= state.spec.max_groups:
            self._evict(state, now)
            if len(groups) >= state.spec.max_groups:
                self.dropped += 1
                return False
        return True

    def _open(self, state: _RuleState, key: _Key, now: int) -> Group | None:
        """A new group ``key`` opening at ``now``, or None when the rule is full."""
        if not self._room(state, now):
            return None
        groups = state.groups
        kind = state.spec.kind
        group = groups[key] = Group(
            now,
            now,
            values={} if kind == "value_count" else _UNUSED_VALUES,
            rows={} if kind == "event_count" else _UNUSED_ROWS,
            times=[] if kind == "beacon" else _UNUSED_TIMES,
        )
        return group

    def _counter(self, state: _RuleState) -> _Counter:
        """The counting function of ``state``'s rule, specialised for its kind."""
        spec = state.spec
        if spec.kind == "beacon":
            return partial(self._beacon, state)
        groups = state.groups
        dirty_add = state.dirty.add
        group_of = state.group_of
        window = spec.window_secs
        threshold = spec.threshold
        sample_rows = spec.sample_rows
        field_name = spec.field or ""
        distinct = spec.kind == "value_count"
        cheap = state.cheap
        open_group = self._open
        room = self._room
        full = state.full
        alert = self._alert
        row_key_items = _row_key_items
        by = spec.group_by
        pair = len(by) == 2 and by[0] == HOST and by[1] != HOST
        other = by[1] if pair else ""
        detail: dict[str, Any] = {"threshold": spec.threshold, "window_secs": spec.window_secs}
        if spec.field:
            detail["field"] = spec.field

        def settle(
            key: _Key, item: Group | _First | None, now: int, columns: Mapping[str, ColumnValue]
        ) -> Group | None:
            """The group to count an event (at ``now``, of ``columns``) in, when
            ``item`` (held for ``key``) is not a group whose window is open; None:
            nothing more to do (a first-event tuple was stored, or the rule is full)."""
            if item is not None:
                if item.__class__ is tuple and item[0] + window > now:
                    group = groups[key] = full(item)  # its second event: a group from now on
                    return group
                del groups[key]  # the window is over: the next one opens at this event
            if not cheap:
                return open_group(state, key, now)
            if not room(state, now):
                return None
            dirty_add(key)
            if not distinct:
                groups[key] = (now, _row_key(columns), columns)
                return None
            value = columns.get(field_name)
            if value is None or value == "":
                groups[key] = (now, None, None)
            else:
                groups[key] = (now, value, columns)
            return None

        def count(
            event: Event, columns: Mapping[str, ColumnValue], now: int
        ) -> AggregateAlert | None:
            # the commonest group (host and one column) built inline: no call
            key = (event.host_identifier, columns.get(other)) if pair else group_of(event, columns)
            held: Any = groups.get(key)
            if held.__class__ is not Group or held.start + window <= now:
                held = settle(key, held, now, columns)
                if held is None:
                    return None
            group: Group = held
            dirty_add(key)
            if distinct:
                if group.last < now:  # noqa: PLR1730 - max() is a call per event
                    group.last = now
                if group.fired:
                    group.count += event.counter != 0
                    return None
                value = columns.get(field_name)
                values = group.values
                if value is None or value == "" or value in values:
                    return None
                values[value] = None
                group.count = len(values)
            else:
                try:
                    row = row_key_items(columns)
                except KeyError:
                    row = _row_key(columns)
                if event.counter == 0 and row in group.rows:
                    return None  # a counter-0 re-log of a row counted already
                if group.last < now:  # noqa: PLR1730 - max() is a call per event
                    group.last = now
                if group.fired:
                    group.count += event.counter != 0
                    return None
                group.rows[row] = None
                group.count += 1
            sample = group.sample
            if len(sample) < sample_rows:
                sample.append(columns)  # read-only: copied when stored
            if group.count < threshold:
                return None
            group.fired = 1
            # not needed once the window has alerted
            group.values, group.rows = _UNUSED_VALUES, _UNUSED_ROWS
            return alert(
                state,
                event,
                key,
                values=key,
                group=group,
                counted=(group.count, group.start),
                detail=detail,
            )

        return count

    def _beacon(
        self, state: _RuleState, event: Event, columns: Mapping[str, ColumnValue], now: int
    ) -> AggregateAlert | None:
        spec = state.spec
        groups = state.groups
        key = values = state.group_of(event, columns)
        item = groups.pop(key, None)
        started = columns.get("first_seen")
        at = started if isinstance(started, int) and started > 0 else now
        row = list(map(columns.get, _ROW_KEY_COLUMNS))  # as stored (JSON has no tuples)
        if item is None:
            if state.cheap:
                if not self._room(state, now):
                    return None
                state.dirty.add(key)
                groups[key] = (now, at, row, columns)
                return None
            group = self._open(state, key, now)
            if group is None:
                return None
        else:
            # to the end: the groups stay in order of their last change
            group = groups[key] = state.full(item)
        state.dirty.add(key)
        times = group.times
        if times:
            if any(r == row for _, r in times):
                return None  # the same connection logged again
            # after its equals, as appending then a stable sort would put it
            bisect.insort_right(times, [at, row], key=_start_of)
            horizon = int(times[-1][0]) - spec.window_secs
            while times and int(times[0][0]) < horizon:
                times.pop(0)
        else:
            times.append([at, row])  # a new group: nothing to order or age out
        del times[: max(0, len(times) - 4 * spec.min_connections)]
        group.last = max(group.last, now)
        group.sample.append(columns)  # read-only: copied when stored
        if len(group.sample) > spec.sample_rows:
            del group.sample[0]
        if len(times) < spec.min_connections or group.fired > now:
            return None
        stamps = [int(t[0]) for t in times]
        score = beacon_score(stamps, spec)
        if score is None:
            return None
        period, regular, tolerance = score
        if regular < spec.min_score:
            return None
        group.fired = int(now + spec.window_secs)
        detail = {
            "min_connections": spec.min_connections,
            "window_secs": spec.window_secs,
            "period_secs": period,
            "score": round(regular, 3),
            "tolerance_secs": tolerance,
        }
        return self._alert(
            state,
            event,
            key,
            values=values,
            group=group,
            counted=(len(times), stamps[0]),
            detail=detail,
        )

    def _alert(
        self,
        state: _RuleState,
        event: Event,
        key: _Key,
        *,
        values: tuple[ColumnValue, ...],
        group: Group,
        counted: tuple[int, int],
        detail: Mapping[str, Any],
    ) -> AggregateAlert:
        count, first = counted
        spec = state.spec
        grouped = dict(zip(spec.group_by, values, strict=True))
        columns = {f: v for f, v in grouped.items() if f != HOST}
        view = replace(event, columns=MappingProxyType(columns))
        rule = state.rule
        return AggregateAlert(
            _alert_id(rule.name, group_key(key), first),
            rule.name,
            rule.notify,
            view,
            severity=rule.filter.severity,
            kind=spec.kind,
            group=MappingProxyType(grouped),
            count=count,
            first_time=first,
            last_time=event.unix_time,
            sample=tuple(MappingProxyType(dict(r)) for r in group.sample),
            detail=MappingProxyType(dict(detail)),
        )

    def _evict(self, state: _RuleState, now: int) -> None:
        """Drop the rule's oldest groups while their window is over.

        Stops at the first group still open, so a full rule costs O(1) per event
        (amortised) rather than a scan of every group.
        """
        groups = state.groups
        while groups:
            key, group = next(iter(groups.items()))
            if not state.expired(group, now):
                return
            del groups[key]
            self._removed.add((state.rule.name, key))


def _veto_of(compiled: CompiledRule) -> Callable[[EventView], bool] | None:
    """The rule's ``exclude`` test: None without entries, the entry's own with one."""
    excludes = compiled._excludes
    if not excludes:
        return None
    if len(excludes) == 1:
        return excludes[0].holds
    return compiled.vetoed


def beacon_score(stamps: Sequence[int], spec: AggregateSpec) -> tuple[float, float, float] | None:
    """Score connection start times for a regular period.

    Args:
        stamps: start times, seconds, ascending.
        spec: the beacon's ``min_period_secs``, ``jitter_secs``, ``jitter_ratio``.

    Returns:
        ``(median period, fraction of regular intervals, tolerance)``, seconds for
        the period and tolerance; None when the median period is shorter than
        ``min_period_secs``. An interval is regular when it is within
        ``max(jitter_secs, jitter_ratio * median)`` of the median.
    """
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    if not intervals:
        return None
    period = float(statistics.median(intervals))
    if period < spec.min_period_secs:
        return None
    tolerance = max(spec.jitter_secs, spec.jitter_ratio * period)
    regular = sum(1 for iv in intervals if abs(iv - period) <= tolerance)
    return period, regular / len(intervals), tolerance
