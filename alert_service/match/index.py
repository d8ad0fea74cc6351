"""The rule index: which rules an event can match, found without trying each rule.

Each condition of a rule may state what an event must show for it to hold
(:class:`~alert_service.match.conditions.Keys`: exact values, integer ranges, a
pattern). The index groups those keys by *dimension* (what they read of the event:
the action, one column, the peer's address number, one text column) and turns each
dimension into one lookup giving a bit mask of rules:

* exact values: one ``dict`` lookup (value → rules);
* integer ranges (ports, uids, CIDRs and IOC lists): the ranges of every rule are cut
  into disjoint segments, each with the rules covering it; one ``bisect``;
* patterns: the globs of every rule joined into one Python regex and the regexes
  into one RE2 regex; a ``fullmatch`` gives the rules having patterns there (each
  is then tried on its own).

Rules without a key in a dimension pass it. An event's candidates are the rules
passing every dimension (bit masks ANDed, in ascending rank, stopping at zero), so
the work per event grows with the number of dimensions — the kinds of conditions —
not with the number of rules. Candidates are then tested in full
(:class:`~alert_service.match.conditions.CompiledConditions` and the ``exclude``
entries): the index only ever drops rules that cannot match. tests/alert_service/match
proves the matches equal those of trying every rule, on random rules and events.

Rebuild the index (a new :class:`RuleIndex`) when an IOC file reloads: its ranges
are read when the index is built.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence

from alert_service.match.conditions import IndexedRow, Keys
from alert_service.match.text import combine_patterns, combine_regexes

__all__ = ["PATTERN_CACHE_ENTRIES", "RuleIndex"]

PATTERN_CACHE_ENTRIES = 4096
"""Most values one dimension with patterns remembers the rules of (see
:meth:`_Dimension._remembered`)."""

_ACTION = "action"
_ACTION_VALUES = ("added", "removed", "snapshot")


class _Dimension:
    """The keys of one dimension, as lookups giving rule bit masks."""

    __slots__ = (
        "exact",
        "free",
        "get",
        "keyed",
        "lookup",
        "masks",
        "name",
        "pattern",
        "pattern_mask",
        "rank",
        "regex",
        "starts",
    )

    def __init__(self, name: str, entries: Sequence[tuple[int, Keys]], rules: int) -> None:
        self.name = name
        self.get: Callable[[IndexedRow], object] = entries[0][1].get
        self.rank = min(keys.rank for _, keys in entries)
        keyed = 0
        exact: dict[object, int] = {}
        sources: dict[object, tuple[int, Keys]] = {}
        patterns: dict[str, None] = {}
        regexes: dict[str, None] = {}
        pattern_mask = 0
        for bit, keys in entries:
            keyed |= bit
            for value in keys.values:
                exact[value] = exact.get(value, 0) | bit
            if keys.spans is not None:
                source = keys.source if keys.source is not None else id(keys)
                mask, first = sources.get(source, (0, keys))
                sources[source] = (mask | bit, first)
            if keys.pattern is not None:
                patterns[keys.pattern] = None
                pattern_mask |= bit
            if keys.regex is not None:
                regexes[keys.regex] = None
                pattern_mask |= bit
        self.keyed = keyed
        self.free = ((1 << rules) - 1) & ~keyed
        self.exact = exact
        self.starts, self.masks = _segments(
            [(mask, keys.spans()) for mask, keys in sources.values() if keys.spans is not None]
        )
        self.pattern_mask = pattern_mask
        self.pattern = combine_patterns(patterns) if patterns else None
        self.regex = combine_regexes(regexes) if regexes else None
        if (patterns and self.pattern is None) or (regexes and self.regex is None):
            self.free |= pattern_mask  # too big to join: these rules always pass here
        self.lookup: Callable[[IndexedRow], int] = self._lookup()
        """The rules that pass this dimension for a view: ``lookup_value(get(view))``,
        specialised to what the dimension holds."""

    def _lookup(self) -> Callable[[IndexedRow], int]:
        """:meth:`lookup_value` after ``get``, without the steps this dimension has no
        keys for (exact values only, ranges only): one call per dimension per event.
        The general form is used otherwise; tests/alert_service/match proves the
        matches equal the reference's."""
        get, free, exact, starts, masks = self.get, self.free, self.exact, self.starts, self.masks
        if self.pattern is not None or self.regex is not None:
            return self._remembered()
        if not starts:
            exact_get = exact.get
            return lambda view: free | exact_get(get(view), 0)
        if exact:
            lookup_value = self.lookup_value
            return lambda view: lookup_value(get(view))

        def spans_only(view: IndexedRow) -> int:
            value = get(view)
            if value.__class__ is int:
                i = bisect_right(starts, value) - 1
                if i >= 0:
                    return free | masks[i]
            return free

        return spans_only

    def _remembered(self) -> Callable[[IndexedRow], int]:
        """:meth:`lookup_value` after ``get``, remembered per value: a dimension with
        patterns runs a regex (RE2 behind a Python wrapper: about a microsecond) where a
        dict lookup does for a value seen before, and the texts patterns read (process
        names, paths, command lines, host names) repeat from row to row. At most
        :data:`PATTERN_CACHE_ENTRIES` values are kept (emptied when full); the index,
        and so the cache, is built anew when an IOC file reloads."""
        get, lookup_value = self.get, self.lookup_value
        cache: dict[object, int] = {}
        cached = cache.get

        def remembered(view: IndexedRow) -> int:
            value = get(view)
            mask = cached(value)
            if mask is None:
                mask = lookup_value(value)
                if len(cache) >= PATTERN_CACHE_ENTRIES:
                    cache.clear()
                cache[value] = mask
            return mask

        return remembered

    def lookup_value(self, value: object) -> int:
        """The rules that pass this dimension for the value ``value`` (``get``'s)."""
        mask = self.free | self.exact.get(value, 0)
        if self.starts and value.__class__ is int:
            i = bisect_right(self.starts, value) - 1
            if i >= 0:
                mask |= self.masks[i]
        if value.__class__ is str and value:
            pattern, regex = self.pattern, self.regex
            if (pattern is not None and pattern(value)) or (regex is not None and regex(value)):
                mask |= self.pattern_mask
        return mask


def _segments(sets: list[tuple[int, list[tuple[int, int]]]]) -> tuple[list[int], list[int]]:
    """Cut ranges into disjoint segments: ``(starts, masks)``, the rules of segment ``i``
    being ``masks[i]`` from ``starts[i]`` up to the next start.

    One set of merged ranges (one IOC list, the usual case) is cut directly
    (:func:`_one_set_segments`); anything else by :func:`_merged_segments`.

    Args:
        sets: ``(rule mask, inclusive ranges)``; the masks are disjoint.
    """
    if len(sets) == 1:
        direct = _one_set_segments(*sets[0])
        if direct is not None:
            return direct
    return _merged_segments(sets)


def _one_set_segments(
    mask: int, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]] | None:
    """The segments of one rule mask over ranges that are ascending, each non-empty,
    and neither overlapping nor touching (as :meth:`IntRanges.spans
    <alert_service.match.ranges.IntRanges.spans>` gives them): ``mask`` from each
    start, nothing from the address after each end. None for other input (or a zero
    mask), which :func:`_merged_segments` cuts.

    The same segments as :func:`_merged_segments`, without sorting twice as many
    points (10k IOC ranges: about 1 ms instead of 7 ms at start-up and at each reload;
    tests/alert_service/match/test_match_index.py checks them equal).
    """
    if not mask:
        return None
    starts: list[int] = []
    after = spans[0][0] - 1 if spans else 0  # one past the previous range's end
    for low, high in spans:
        if low <= after or high < low:
            return None
        starts.append(low)
        after = high + 1
        starts.append(after)
    return starts, [mask, 0] * len(spans)


def _merged_segments(
    sets: list[tuple[int, list[tuple[int, int]]]],
) -> tuple[list[int], list[int]]:
    """:func:`_segments` for any input: a sweep over the sorted range ends."""
    points: list[tuple[int, int, int]] = []
    for index, (_, spans) in enumerate(sets):
        for low, high in spans:
            points.append((low, 1, index))
            points.append((high + 1, -1, index))
    points.sort()
    counts = [0] * len(sets)
    starts: list[int] = []
    masks: list[int] = []
    current = 0
    i = 0
    while i < len(points):
        position = points[i][0]
        while i < len(points) and points[i][0] == position:
            _, step, index = points[i]
            before = counts[index]
            counts[index] = before + step
            if before == 0 and step > 0:
                current |= sets[index][0]
            elif before == 1 and step < 0:
                current &= ~sets[index][0]
            i += 1
        if not masks or masks[-1] != current:
            starts.append(position)
            masks.append(current)
    return starts, masks


class RuleIndex:
    """The rules an event can match, as a bit mask (bit ``i``: rule ``i``).

    Args:
        keys: per rule, in rule order, the keys of its conditions (not of its
            ``exclude`` entries); a rule with two keys in one dimension is indexed
            by the first.
    """

    __slots__ = ("_action", "_actions", "_all", "_dimensions", "_own_or_added")

    def __init__(self, keys: Sequence[Sequence[Keys]]) -> None:
        self._all = (1 << len(keys)) - 1
        by_dimension: dict[str, list[tuple[int, Keys]]] = {}
        for i, rule_keys in enumerate(keys):
            seen: set[str] = set()
            for item in rule_keys:
                if item.dimension not in seen:
                    seen.add(item.dimension)
                    by_dimension.setdefault(item.dimension, []).append((1 << i, item))
        dimensions = [_Dimension(name, items, len(keys)) for name, items in by_dimension.items()]
        dimensions.sort(key=lambda d: (d.rank, d.name))
        # The action is looked up first, from a table of the three actions: one dict
        # lookup, and candidates_pair() can take two actions for one event.
        action = next((d for d in dimensions if d.name == _ACTION), None)
        self._action = action
        self._actions: dict[object, int] = (
            {a: action.lookup_value(a) for a in _ACTION_VALUES} if action is not None else {}
        )
        self._dimensions = tuple(d for d in dimensions if d is not action)
        # The rules a row may match as its own action or, ``removed``, as ``added``
        # (what the baseline asks of it): the first mask of :meth:`none_possible`.
        self._own_or_added: dict[object, int] = {
            a: self._action_mask(a) | (self._action_mask("added") if a == "removed" else 0)
            for a in _ACTION_VALUES
        }

    @property
    def dimensions(self) -> tuple[str, ...]:
        """The dimensions looked up, in order (for tests and diagnostics)."""
        first = (self._action.name,) if self._action is not None else ()
        return first + tuple(d.name for d in self._dimensions)

    def _action_mask(self, action: object) -> int:
        if self._action is None:
            return self._all
        mask = self._actions.get(action)
        return self._action.lookup_value(action) if mask is None else mask

    def candidates(self, view: IndexedRow) -> int:
        """The bit mask of the rules that may match ``view`` (a superset of the matches)."""
        mask = self._actions.get(view.action)
        if mask is None:
            mask = self._action_mask(view.action)
        for dimension in self._dimensions:
            if mask & dimension.keyed:
                mask &= dimension.lookup(view)
                if not mask:
                    return 0
        return mask

    def none_possible(self, view: IndexedRow) -> bool:
        """True when no rule can match ``view`` and, for a ``removed`` view, none can
        match it as ``added`` either: ``candidates_pair(view, "added") == (0, 0)`` for a
        ``removed`` view, ``candidates(view) == 0`` otherwise, from one pass over the
        dimensions."""
        mask = self._own_or_added[view.action]
        for dimension in self._dimensions:
            if mask & dimension.keyed:
                mask &= dimension.lookup(view)
                if not mask:
                    return True
        return not mask

    def candidates_pair(self, view: IndexedRow, other: object) -> tuple[int, int]:
        """The candidates of ``view`` as its own action and as the action ``other``.

        Both masks from one lookup per dimension: the baseline asks of each ``removed``
        row whether it would have matched as ``added``
        (:meth:`~alert_service.match.rules.RuleSet.matches_as`).
        """
        own = self._action_mask(view.action)
        alt = self._action_mask(other)
        mask = own | alt
        for dimension in self._dimensions:
            if mask & dimension.keyed:
                mask &= dimension.lookup(view)
                if not mask:
                    return 0, 0
        return mask & own, mask & alt
