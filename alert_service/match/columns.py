"""Columns the rules need, watched per query: a renamed column must not blind rules.

A rule reads columns (``remote_address`` for an address condition, ``name`` for
``process.name``...: :attr:`~alert_service.match.conditions.Condition.needs`). If a
pack change renames or drops one, every rule on it stops matching and nothing
fails. :class:`ColumnWatch` notices: when the first :data:`ROWS_BEFORE_MISSING`
rows of a query that an enabled rule sees all lack a column that rule needs (absent,
null or empty; ``"None"`` text in an integer column is read as null by the parse
stage), it logs ``rule_column_missing`` once for that (query, column) and lists it in
:attr:`ColumnWatch.missing` (the ``/health`` document and the
``alert_service_rule_column_missing`` gauge). A single row without a value is normal
(an unattributed socket has no ``name``) and is never reported. When the column
shows up again, the entry is removed (``rule_column_found``). Lines are never
dropped for a missing column.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Final

from alert_service.logs import log_event
from alert_service.match.conditions import CONDITIONS, ConditionsSpec, RuleSpec
from alert_service.match.spec import ANY_QUERY
from alert_service.parse.event import Event
from alert_service.parse.names import parse_query_name

__all__ = ["ROWS_BEFORE_MISSING", "ColumnWatch", "needed_columns"]

ROWS_BEFORE_MISSING: Final = 50
"""Rows of a query, all without a needed column, before that column is reported."""

_log = logging.getLogger(__name__)
_EMPTY: Final[tuple[str, ...]] = ()


def needed_columns(spec: ConditionsSpec) -> tuple[str, ...]:
    """The columns ``spec``'s conditions read, in table order, each once."""
    out: dict[str, None] = {}
    for condition in CONDITIONS:
        value = getattr(spec, condition.key)
        if value is not None:
            out.update(dict.fromkeys(condition.needs(value)))
    return tuple(out)


class _Query:
    """What is known of one query's rows: columns not seen yet, rows counted."""

    __slots__ = ("needs", "rows", "unseen")

    def __init__(self, needs: Mapping[str, tuple[str, ...]]) -> None:
        self.needs = needs
        self.unseen = set(needs)
        self.rows = 0


class ColumnWatch:
    """Notices when a query's rows lack a column that an enabled rule needs.

    Args:
        rules: the configured rules (disabled ones are ignored).
        rows_before_missing: see :data:`ROWS_BEFORE_MISSING`.

    Attributes:
        missing: ``(logged query name, column)`` → names of the rules needing it,
            for the columns reported missing now. Replaced whole on each change, so
            another thread (``/health``, ``/metrics``) may read it.
        settled: logged query names whose needed columns have all been seen: their
            events need no :meth:`observe` (the hot loop tests this set inline).
    """

    __slots__ = ("_queries", "_rules", "_threshold", "missing", "settled")

    def __init__(
        self, rules: Iterable[RuleSpec], rows_before_missing: int = ROWS_BEFORE_MISSING
    ) -> None:
        self._rules = tuple(
            (rule.name, rule.queries, needed_columns(rule)) for rule in rules if rule.enabled
        )
        self._threshold = rows_before_missing
        self._queries: dict[str, _Query] = {}
        self.missing: dict[tuple[str, str], tuple[str, ...]] = {}
        self.settled: set[str] = set()

    def needed_by(self, name: str, query: str | None = None) -> dict[str, tuple[str, ...]]:
        """Column → the enabled rules that need it, among those seeing query ``name``.

        Args:
            name: the logged query name.
            query: its query part (split from ``name`` with the default pack names
                when None).
        """
        part = parse_query_name(name).query if query is None else query
        out: dict[str, list[str]] = {}
        for rule, queries, columns in self._rules:
            if queries is not None and ANY_QUERY not in queries and not {name, part} & set(queries):
                continue
            for column in columns:
                out.setdefault(column, []).append(rule)
        return {column: tuple(names) for column, names in out.items()}

    def observe(self, event: Event) -> None:
        """Take one event into account; log and record a column found missing."""
        state = self._queries.get(event.name)
        if state is None:
            state = self._queries[event.name] = _Query(self.needed_by(event.name, event.query))
        if not state.unseen:
            self.settled.add(event.name)
            return
        columns = event.columns
        state.rows += 1
        for column in tuple(state.unseen):
            value = columns.get(column)
            if value is not None and value != "":
                state.unseen.discard(column)
                self._found(event.name, column)
        if not state.unseen:
            self.settled.add(event.name)  # every needed column seen: the common case
        if state.rows == self._threshold:
            for column in sorted(state.unseen):
                self._report(event.name, column, state.needs[column])

    def _report(self, name: str, column: str, rules: tuple[str, ...]) -> None:
        self.missing = {**self.missing, (name, column): rules}
        log_event(
            _log,
            logging.WARNING,
            "rule_column_missing",
            query=name,
            column=column,
            rules=list(rules),
            rows=self._threshold,
            reason=f"{self._threshold} rows of this query had no {column!r}, which these "
            "rules need: they cannot match (a renamed or dropped column?)",
        )

    def _found(self, name: str, column: str) -> None:
        if (name, column) in self.missing:
            self.missing = {k: v for k, v in self.missing.items() if k != (name, column)}
            log_event(_log, logging.INFO, "rule_column_found", query=name, column=column)
