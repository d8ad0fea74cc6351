"""Parse stage: osquery result-log lines → typed :class:`Event` objects.

Public API:

* :func:`parse_line` — one line (bytes or text) → list of :class:`Event`; raises
  :class:`~alert_service.errors.ParseError` for anything that is not a result line;
* :func:`glued_line_start` — where a complete line starts inside a line that failed
  because a crashed writer's unterminated fragment precedes it;
* :class:`Event` — one row of one query run, columns typed once;
* :func:`parse_query_name` / :class:`QueryName` — ``pack_<pack>_<query>`` and
  ``pack/<pack>/<query>`` names;
* :func:`normalise_columns` — typed column values from the column contract;
  :class:`Row` — the same values, typed when read (the parser's fast path).
"""

from __future__ import annotations

from alert_service.parse.event import Action, ColumnValue, Event
from alert_service.parse.line import decode_line, glued_line_start, parse_line
from alert_service.parse.names import DEFAULT_KNOWN_PACKS, QueryName, parse_query_name
from alert_service.parse.row import Row
from alert_service.parse.values import normalise_columns, to_int

__all__ = [
    "DEFAULT_KNOWN_PACKS",
    "Action",
    "ColumnValue",
    "Event",
    "QueryName",
    "Row",
    "decode_line",
    "glued_line_start",
    "normalise_columns",
    "parse_line",
    "parse_query_name",
    "to_int",
]
