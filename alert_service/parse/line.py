"""Parse one osquery result-log line into typed events.

Accepted forms (osquery-protocol-and-logs.md §4, osquery/core/query.cpp; pinned by
osquery/logger/tests/logger.cpp):

* event (``--logger_event_type=true``, the default): ``{"name", "hostIdentifier",
  "calendarTime", "unixTime", "epoch", "counter", "numerics", ["decorations"],
  "columns": {...}, "action": "added"|"removed"}`` → one event;
* batch (``--logger_event_type=false``): ``{"diffResults": {"removed": [...],
  "added": [...]}, ...}`` → one event per row, removed rows first (as the event form
  logs them);
* snapshot: ``{"snapshot": [...], "action": "snapshot", ...}`` → one event per row
  with action ``snapshot``; the event form with ``"action": "snapshot"`` too.

``unixTime``/``epoch``/``counter`` may be numbers or decimal text (old osquery and its
stale docs quote them). Decorations may be nested under ``decorations`` or, with
``--decorations_top_level``, be extra top-level members. Fleet writes the same lines to
its result log (fleetdm/fleet server/logging/filesystem.go).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, cast

from alert_service.errors import ParseError
from alert_service.parse.event import Action, Event
from alert_service.parse.names import DEFAULT_KNOWN_PACKS, parse_query_name
from alert_service.parse.values import normalise_columns, to_int

__all__ = ["decode_line", "parse_line"]

_ESCAPE_ERRORS: Final = "alert_service.osquery_escape"
_KNOWN_KEYS: Final = frozenset(
    {
        "name",
        "hostIdentifier",
        "calendarTime",
        "unixTime",
        "epoch",
        "counter",
        "numerics",
        "decorations",
        "columns",
        "action",
        "diffResults",
        "snapshot",
    }
)
_BATCH_ORDER: Final[tuple[Action, ...]] = ("removed", "added")
_EVENT_ACTIONS: Final[frozenset[str]] = frozenset({"added", "removed", "snapshot"})


def _escape_invalid_bytes(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler: write each invalid byte as JSON text for ``\\xNN``."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(f"\\\\x{b:02X}" for b in bad), err.end


codecs.register_error(_ESCAPE_ERRORS, _escape_invalid_bytes)


def decode_line(line: bytes) -> str:
    """Decode a raw line as UTF-8, writing invalid bytes as the text ``\\xNN``.

    osquery escapes non-printable bytes this way itself, but snapshot results are never
    escaped (osquery-protocol-and-logs.md §4), so invalid UTF-8 can reach the log; it
    becomes the same ``\\xNN`` text (uppercase hex) instead of failing the line.
    """
    return line.decode("utf-8", errors=_ESCAPE_ERRORS)


def _reject_constant(token: str) -> Any:
    raise ParseError(f"invalid JSON number {token}")


def _load(line: bytes | str) -> dict[str, Any]:
    text = decode_line(line) if isinstance(line, bytes) else line
    if not text.strip():
        raise ParseError("empty line")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise ParseError(f"invalid JSON: {err.msg} at column {err.colno}") from err
    except RecursionError as err:
        raise ParseError("invalid JSON: nested too deeply") from err
    if not isinstance(doc, dict):
        raise ParseError(f"expected a JSON object, got {type(doc).__name__}")
    return cast(dict[str, Any], doc)


def _text(doc: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = doc.get(key)
    if value is None:
        if required:
            raise ParseError(f'"{key}" is missing')
        return ""
    if not isinstance(value, str):
        raise ParseError(f'"{key}": expected text, got {type(value).__name__}')
    return value


def _decorations(doc: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    nested = doc.get("decorations")
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ParseError(f'"decorations": expected an object, got {type(nested).__name__}')
        for key, value in nested.items():
            out[str(key)] = _scalar_text(value, f"decorations.{key}")
    for key, value in doc.items():
        # --decorations_top_level: decorations become extra top-level members.
        if key not in _KNOWN_KEYS and isinstance(value, str | int | float):
            out.setdefault(key, _scalar_text(value, key))
    return out


def _scalar_text(value: object, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value is None:
            return ""
        raise ParseError(f'"{where}": expected text, got {type(value).__name__}')
    return str(value)


def _rows(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParseError(f'"{where}": expected an array, got {type(value).__name__}')
    return value


def parse_line(line: bytes | str, known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS) -> list[Event]:
    """Parse one result-log line.

    Args:
        line: the line without its newline, as bytes read from the log or as text.
        known_packs: pack names used to split ``pack_<pack>_<query>`` names (see
            :func:`alert_service.parse.names.parse_query_name`).

    Returns:
        The line's events in log order: one for the event form, one per row for the
        batch and snapshot forms (possibly none: a first run with zero rows logs empty
        arrays).

    Raises:
        ParseError: the line is not JSON, not an object, lacks ``name``,
            ``hostIdentifier`` or ``unixTime``, has fields of the wrong type, an unknown
            ``action``, or none of ``columns``/``diffResults``/``snapshot``. The message
            names the offending field.
    """
    doc = _load(line)
    name = _text(doc, "name", required=True)
    if not name:
        raise ParseError('"name" is empty')
    parts = parse_query_name(name, known_packs)
    host = _text(doc, "hostIdentifier", required=True)
    if "unixTime" not in doc:
        raise ParseError('"unixTime" is missing')
    common: dict[str, Any] = {
        "name": name,
        "pack": parts.pack,
        "query": parts.query,
        "host_identifier": host,
        "calendar_time": _text(doc, "calendarTime", required=False),
        "unix_time": to_int(doc["unixTime"], "unixTime"),
        "epoch": to_int(doc.get("epoch", 0), "epoch"),
        "counter": to_int(doc.get("counter", 0), "counter"),
        "decorations": MappingProxyType(_decorations(doc)),
    }

    if "diffResults" in doc:
        diff = doc["diffResults"]
        if not isinstance(diff, Mapping):
            raise ParseError(f'"diffResults": expected an object, got {type(diff).__name__}')
        events: list[Event] = []
        for kind in _BATCH_ORDER:
            for i, row in enumerate(_rows(diff.get(kind), f"diffResults.{kind}")):
                columns = normalise_columns(row, f"diffResults.{kind}[{i}]")
                events.append(Event(action=kind, columns=MappingProxyType(columns), **common))
        return events

    action = doc.get("action")
    if "snapshot" in doc:
        if action not in (None, "snapshot"):
            raise ParseError(f'"action": expected "snapshot" with "snapshot" rows, got {action!r}')
        return [
            Event(
                action="snapshot",
                columns=MappingProxyType(normalise_columns(row, f"snapshot[{i}]")),
                **common,
            )
            for i, row in enumerate(_rows(doc["snapshot"], "snapshot"))
        ]

    if "columns" in doc:
        if not isinstance(action, str) or action not in _EVENT_ACTIONS:
            raise ParseError(f'"action": expected added, removed or snapshot, got {action!r:.40}')
        columns = normalise_columns(doc["columns"], "columns")
        return [Event(action=cast(Action, action), columns=MappingProxyType(columns), **common)]

    raise ParseError('line has none of "columns", "diffResults" or "snapshot"')
