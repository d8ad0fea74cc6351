"""Parse one osquery result-log line into typed events.

Accepted forms (docs/design/osquery-interfaces.md §4, osquery/core/query.cpp; pinned by
osquery/logger/tests/logger.cpp):

* event (``--logger_event_type=true``, the default): ``{"name", "hostIdentifier",
  "calendarTime", "unixTime", "epoch", "counter", "numerics", ["decorations"],
  "columns": {...}, "action": "added"|"removed"}`` → one event;
* batch (``--logger_event_type=false``): ``{"diffResults": {"removed": [...],
  "added": [...]}, ...}`` → one event per row, removed rows first (as the event form
  logs them);
* snapshot: ``{"snapshot": [...], "action": "snapshot", ...}`` → one event per row
  with action ``snapshot``; the event form with ``"action": "snapshot"`` too;
* Fleet: the same lines (fleetdm/fleet server/logging/filesystem.go), plus the TLS
  logger's envelope ``{"node_key", "log_type": "result", "data": [line, ...]}``
  (osquery plugins/logger/tls_logger.cpp) when such a body is logged whole → the
  events of every item of ``data``. A ``log_type`` other than ``result`` (``status``)
  and a result line carrying ``"log_type": "status"`` give no events.

``unixTime``/``epoch``/``counter`` may be numbers or decimal text (old osquery and its
stale docs quote them). Decorations may be nested under ``decorations`` or, with
``--decorations_top_level``, be extra top-level text members. Other unknown top-level
members (any non-text value, and the envelope's ``log_type``/``node_key``) are ignored,
so a field added by a later osquery does not make every line malformed.

Every library error (``json``, ``int()`` limits, recursion) is turned into
:class:`~alert_service.errors.ParseError` here; nothing else escapes.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Container, Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec
import orjson

from alert_service.errors import ParseError
from alert_service.parse.event import Action, ColumnValue, Event, new_event
from alert_service.parse.names import DEFAULT_KNOWN_PACKS, QueryName, parse_query_name
from alert_service.parse.row import Row, lazy_columns, text_row
from alert_service.parse.values import normalise_columns, to_int

__all__ = [
    "MAX_GLUED_CANDIDATES",
    "EventLine",
    "decode_line",
    "event_form_row",
    "event_of_row",
    "glued_line_start",
    "parse_line",
]

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
        "log_type",
        "node_key",
    }
)
_BATCH_ORDER: Final[tuple[Action, ...]] = ("removed", "added")
_ACTIONS: Final[dict[str, Action]] = {
    "added": "added",
    "removed": "removed",
    "snapshot": "snapshot",
}
_orjson_loads: Final = orjson.loads
_NUL_ESCAPE: Final = "\\u0000"
_NUL_ESCAPE_BYTES: Final = b"\\u0000"
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})

MAX_GLUED_CANDIDATES: Final = 64
"""Most ``{"`` positions :func:`glued_line_start` tries in one line."""


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
    escaped (docs/design/osquery-interfaces.md §4), so invalid UTF-8 can reach the log; it
    becomes the same ``\\xNN`` text (uppercase hex) instead of failing the line.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("utf-8", errors=_ESCAPE_ERRORS)


def _reject_constant(token: str) -> Any:
    raise ParseError(f"invalid JSON number {token}")


# One decoder for every line: json.loads(..., parse_constant=...) would build a new
# JSONDecoder per call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _load_slow(line: bytes | str) -> object:
    """The standard library decoder: the reference for what a valid line is.

    Used for every line orjson refuses (invalid UTF-8, NaN, huge numbers, lone
    surrogates, bad JSON), so that errors and the ``\\xNN`` treatment of invalid UTF-8
    do not depend on orjson.
    """
    text = decode_line(line) if isinstance(line, bytes) else line
    try:
        doc = _DECODER.decode(text)
    except json.JSONDecodeError as err:
        if not text.strip():
            raise ParseError("empty line") from err
        raise ParseError(f"invalid JSON: {err.msg} at column {err.colno}") from err
    except RecursionError as err:
        raise ParseError("invalid JSON: nested too deeply") from err
    except ValueError as err:  # int() digit limit on a huge JSON number
        raise ParseError(f"invalid JSON: {str(err)[:80]}") from err
    # Text that is not valid Unicode (a lone surrogate, raw or as a \\uD8xx escape)
    # could be neither stored nor sent as UTF-8 later: each lone surrogate becomes
    # U+FFFD REPLACEMENT CHARACTER here, and the rest of the line is kept.
    try:
        text.encode("utf-8")
        if "\\u" in text:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return _clean_text(doc)
    return doc


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clean_str(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return _SURROGATE.sub("\ufffd", text)


def _clean_text(value: Any) -> Any:
    """``value`` (a decoded JSON value) with every text, keys included, made safe:
    NUL written as the four characters ``\\x00`` (osquery's own form for a byte it
    cannot print) and each lone surrogate as U+FFFD."""
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, dict):
        return {_clean_str(k): _clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_text(v) for v in value]
    return value


def _load(line: bytes | str) -> tuple[dict[str, Any], bool]:
    """The line's JSON object, and whether its text may hold osquery ``\\xNN`` escapes.

    A text value holding a backslash is written in JSON with a backslash (``\\\\``,
    or ``\\u005c``), so a line without any backslash holds no escape to decode; one
    byte search (``memchr``) decides for the common line. A line read by the slow
    path (invalid UTF-8 is written as ``\\xNN`` there) is always checked.
    """
    escapes = (b"\\" in line) if isinstance(line, bytes) else ("\\" in line)
    try:
        # orjson (a dependency) is about twice as fast as json; it accepts a subset
        # of what json accepts, with the same result (integers beyond 64 bits aside,
        # which it reads as floats; osquery's BIGINT is 64-bit).
        doc = _orjson_loads(line)
    except orjson.JSONDecodeError:
        doc = _load_slow(line)
        escapes = True
    # A NUL can only come from a \u0000 escape (JSON forbids raw control bytes); osquery
    # never writes one. It would end a C string downstream (a program's argument, a
    # path): replaced here, once, for every value.
    if _NUL_ESCAPE_BYTES in line if isinstance(line, bytes) else _NUL_ESCAPE in line:
        doc = _clean_text(doc)
    if doc.__class__ is not dict:
        raise ParseError(f"expected a JSON object, got {type(doc).__name__}")
    loaded: dict[str, Any] = doc
    return loaded, escapes


def _decoration_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):  # digit limit, nesting
        return ""


def _decorations(doc: Mapping[str, Any]) -> Mapping[str, str]:
    nested = doc.get("decorations")
    if nested is None and doc.keys() <= _KNOWN_KEYS:
        return _EMPTY
    extra = doc.keys() - _KNOWN_KEYS
    out: dict[str, str] = {}
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ParseError(f'"decorations": expected an object, got {type(nested).__name__}')
        for key, value in nested.items():
            out[key] = _decoration_text(value)
    # --decorations_top_level: decorations become extra top-level text members; other
    # unknown members are not decorations and are ignored.
    for key in sorted(extra):
        value = doc[key]
        if isinstance(value, str):
            out.setdefault(key, value)
    return MappingProxyType(out)


def _text(doc: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = doc.get(key)
    if value.__class__ is str:
        return value
    if value is None:
        if required:
            raise ParseError(f'"{key}" is missing')
        return ""
    raise ParseError(f'"{key}": expected text, got {type(value).__name__}')


def _rows(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ParseError(f'"{where}": expected an array, got {type(value).__name__}')
    return value


@lru_cache(maxsize=4096)
def _split_name(name: str, known_packs: frozenset[str]) -> QueryName:
    return parse_query_name(name, known_packs)


def _columns(
    raw: object, where: str, escapes: bool, strict: bool = True
) -> tuple[Mapping[str, ColumnValue], Mapping[str, str]]:
    """The typed columns of one row and, when escapes were decoded, their logged text
    (``strict``: see :func:`~alert_service.parse.values.normalise_columns`).

    A row of a line without escapes that passes :func:`lazy_columns`' check is typed
    when read (the same values either way, ``strict`` or not)."""
    if not escapes:
        row = lazy_columns(raw)
        if row is not None:
            return row, _EMPTY
        return MappingProxyType(normalise_columns(raw, where, strict=strict)), _EMPTY
    logged: dict[str, str] = {}
    columns = MappingProxyType(normalise_columns(raw, where, logged, strict=strict))
    return columns, (MappingProxyType(logged) if logged else _EMPTY)


_Head = tuple[str, str | None, str, str, str, int, int, int]
"""An event's fields before ``action``: name, pack, query, hostIdentifier,
calendarTime, unixTime, epoch, counter — the same for every row of one line."""


def _row_events(  # noqa: PLR0917 - the line's parts
    head: _Head,
    action: Action,
    rows: object,
    where: str,
    decorations: Mapping[str, str],
    escapes: bool,
    strict: bool,
) -> list[Event]:
    """One event per row of a batch (``diffResults.<kind>``) or ``snapshot`` array.

    Args:
        head: the line's shared fields (see :data:`_Head`).
        action: the rows' action.
        rows: the array as logged (None is no rows).
        where: its path in the line, for messages (``diffResults.added``).
        decorations: the line's decorations.
        escapes: whether the line may hold osquery ``\\xNN`` escapes to decode.
        strict: whether the columns are typed strictly (a row of the pack's queries).

    Raises:
        ParseError: ``rows`` is not an array, or a row is not a valid columns object.
    """
    events: list[Event] = []
    for i, row in enumerate(_rows(rows, where)):
        columns, logged = _columns(row, f"{where}[{i}]", escapes, strict)
        events.append(Event(*head, action, columns, decorations, logged))
    return events


def _parse_doc(
    doc: dict[str, Any],
    packs: frozenset[str],
    escapes: bool,
    strict_queries: Container[str] | None,
) -> list[Event]:
    get = doc.get
    if "log_type" in doc and doc["log_type"] != "result":
        return []  # a Fleet status (or other non-result) record
    # Each field: one identity test in the common case, the helpers otherwise.
    name = get("name")
    if name.__class__ is not str or not name:
        name = _text(doc, "name", required=True)
        if not name:
            raise ParseError('"name" is empty')
    parts = _split_name(name, packs)
    host = get("hostIdentifier")
    if host.__class__ is not str:
        host = _text(doc, "hostIdentifier", required=True)
    unix_time = get("unixTime")
    if unix_time.__class__ is not int:
        if "unixTime" not in doc:
            raise ParseError('"unixTime" is missing')
        unix_time = to_int(unix_time, "unixTime")
    epoch = get("epoch", 0)
    if epoch.__class__ is not int:
        epoch = to_int(epoch, "epoch")
    counter = get("counter", 0)
    if counter.__class__ is not int:
        counter = to_int(counter, "counter")
    calendar = get("calendarTime", "")
    if calendar.__class__ is not str:
        calendar = _text(doc, "calendarTime", required=False)
    if "decorations" not in doc and doc.keys() <= _KNOWN_KEYS:
        decorations = _EMPTY  # the common case, without a call
    else:
        decorations = _decorations(doc)
    pack, query = parts.pack, parts.query
    strict = strict_queries is None or query in strict_queries or name in strict_queries

    columns = get("columns")
    if columns is not None and "diffResults" not in doc and "snapshot" not in doc:
        # The event form: by far the most common line, so it comes first.
        logged = get("action")
        action = _ACTIONS.get(logged) if logged.__class__ is str else None
        if action is None:
            raise ParseError(f'"action": expected added, removed or snapshot, got {logged!r:.40}')
        typed, logged = _columns(columns, "columns", escapes, strict)
        return [
            Event(
                name,
                pack,
                query,
                host,
                calendar,
                unix_time,
                epoch,
                counter,
                action,
                typed,
                decorations,
                logged,
            )
        ]

    head: _Head = (name, pack, query, host, calendar, unix_time, epoch, counter)
    if "diffResults" in doc:
        diff = doc["diffResults"]
        if not isinstance(diff, Mapping):
            raise ParseError(f'"diffResults": expected an object, got {type(diff).__name__}')
        events: list[Event] = []
        for kind in _BATCH_ORDER:
            events += _row_events(
                head, kind, diff.get(kind), f"diffResults.{kind}", decorations, escapes, strict
            )
        return events

    if "snapshot" in doc:
        action = get("action")
        if action not in (None, "snapshot"):
            raise ParseError(f'"action": expected "snapshot" with "snapshot" rows, got {action!r}')
        return _row_events(
            head, "snapshot", doc["snapshot"], "snapshot", decorations, escapes, strict
        )

    if "columns" in doc:  # "columns": null
        raise ParseError("columns: expected an object, got NoneType")
    raise ParseError('line has none of "columns", "diffResults" or "snapshot"')


class _EventLine(msgspec.Struct, rename="camel", forbid_unknown_fields=True, gc=False):
    """An event-form line as osquery writes it, decoded and type-checked by msgspec.

    Exactly the members osquery writes (``numerics`` and ``decorations`` optional, the
    latter of text values), each of its usual JSON type; any other line fails to
    decode and takes the general path."""

    name: str
    host_identifier: str
    unix_time: int
    columns: dict[str, str]
    action: str
    calendar_time: str = ""
    epoch: int = 0
    counter: int = 0
    numerics: object = None  # any JSON value: not read, as on the general path
    decorations: dict[str, str] | None = None


_decode_event_line: Final = msgspec.json.Decoder(_EventLine).decode
EventLine = _EventLine
"""The decoded event-form line :func:`event_form_row` gives (read its members only)."""


def event_form_row(line: bytes) -> tuple[_EventLine, Action, Row] | None:
    """The members of a common event-form line without building its event, or None.

    Not None exactly when :func:`parse_line` would take its fast path for ``line``
    (no backslash, decoded as an :class:`EventLine` with a known action and a
    non-empty name) *and* the row passes :func:`~alert_service.parse.row.text_row`'s
    check: then ``parse_line(line, packs, strict_queries)`` returns, for any
    ``packs`` and ``strict_queries``, exactly one event whose ``name``,
    ``host_identifier``, ``unix_time``, ``epoch`` and ``counter`` are the decoded
    line's, whose ``action`` is the second item and whose columns equal the
    :class:`~alert_service.parse.row.Row` (the third). None: call ``parse_line``,
    which decides (including every error). The pipeline uses it to pass over rows no
    rule can match (alert_service/pipeline.py);
    tests/alert_service/match/test_match_pass_over.py proves the claim above on random
    lines.
    """
    if b"\\" in line:
        return None
    try:
        head = _decode_event_line(line)
    except (msgspec.DecodeError, RecursionError):
        return None
    action = _ACTIONS.get(head.action)
    if action is None or not head.name:
        return None
    row = text_row(head.columns)
    if row is None:
        return None
    return head, action, row


def _event_form(
    line: bytes, packs: frozenset[str], strict_queries: Container[str] | None
) -> list[Event] | None:
    """The event of an event-form line as osquery writes it, or None to take the general
    path (:func:`_load` and :func:`_parse_doc`), which gives the same event or the error.

    For a line without a backslash (no escape to decode) that msgspec decodes as an
    :class:`_EventLine` with a known action and a non-empty name: one C call checks
    every member's type and that every column value is text, which the general path
    does member by member after ``orjson.loads``. The property tests in
    tests/alert_service/parse/test_parse_fastpaths.py check that it equals the general
    path on random documents and on corrupted lines.
    """
    try:
        head = _decode_event_line(line)
    except (msgspec.DecodeError, RecursionError):
        return None  # not this shape, not JSON or nested too deeply: the general path decides
    name = head.name
    action = _ACTIONS.get(head.action)
    if action is None or not name:
        return None
    columns = head.columns
    row: Mapping[str, ColumnValue] | None = text_row(columns)
    if row is None:
        query = _split_name(name, packs).query
        strict = strict_queries is None or query in strict_queries or name in strict_queries
        row = MappingProxyType(normalise_columns(columns, "columns", strict=strict))
    return [event_of_row(head, action, row, packs)]


def event_of_row(
    head: _EventLine, action: Action, row: Mapping[str, ColumnValue], packs: frozenset[str]
) -> Event:
    """The event of a decoded event-form line whose row is typed: with ``head``,
    ``action`` and ``row`` from :func:`event_form_row`, the one event ``parse_line``
    gives for that line with ``packs`` as its ``known_packs``."""
    name = head.name
    parts = _split_name(name, packs)
    decorations = head.decorations
    return new_event(
        name,
        parts.pack,
        parts.query,
        head.host_identifier,
        head.calendar_time,
        head.unix_time,
        head.epoch,
        head.counter,
        action,
        row,
        MappingProxyType(decorations) if decorations else _EMPTY,
        _EMPTY,
    )


def _parse_envelope(
    doc: dict[str, Any],
    packs: frozenset[str],
    escapes: bool,
    strict_queries: Container[str] | None,
) -> list[Event]:
    """The Fleet/osquery TLS logger body ``{"log_type", "data": [...]}``."""
    if doc.get("log_type") != "result":
        return []
    items = _rows(doc.get("data"), "data")
    events: list[Event] = []
    for i, item in enumerate(items):
        if item.__class__ is not dict:
            raise ParseError(f"data[{i}]: expected a JSON object, got {type(item).__name__}")
        try:
            events += _parse_doc(cast(dict[str, Any], item), packs, escapes, strict_queries)
        except ParseError as err:
            raise ParseError(f"data[{i}]: {err}") from err
    return events


def parse_line(
    line: bytes | str,
    known_packs: Iterable[str] = DEFAULT_KNOWN_PACKS,
    strict_queries: Container[str] | None = None,
) -> list[Event]:
    """Parse one result-log line.

    Args:
        line: the line without its newline, as bytes read from the log or as text.
        known_packs: pack names used to split ``pack_<pack>_<query>`` names (see
            :func:`alert_service.parse.names.parse_query_name`); a ``frozenset`` is used
            as is, anything else is copied into one per call.
        strict_queries: query names (full logged name or query part) whose rows are
            typed strictly by the column contract (a bad integer is a ParseError);
            rows of other queries are typed leniently and never fail on a column
            value (see :func:`~alert_service.parse.values.normalise_columns`). None:
            every row strictly.

    Returns:
        The line's events in log order: one for the event form, one per row for the
        batch and snapshot forms (possibly none: a first run with zero rows logs empty
        arrays), those of every ``data`` item for a Fleet TLS envelope, none for a
        non-result ``log_type``.

    Raises:
        ParseError: the line is not JSON, not an object, lacks ``name``,
            ``hostIdentifier`` or ``unixTime``, has fields of the wrong type, an unknown
            ``action``, or none of ``columns``/``diffResults``/``snapshot``. The message
            names the offending field.
    """
    packs = known_packs if isinstance(known_packs, frozenset) else frozenset(known_packs)
    if line.__class__ is bytes and b"\\" not in line:
        # The common line: no escape of any kind (no \\xNN, no \\u0000), in the event
        # form as osquery writes it.
        events = _event_form(line, packs, strict_queries)
        if events is not None:
            return events
    doc, escapes = _load(line)
    if "data" in doc and "log_type" in doc and "name" not in doc:
        return _parse_envelope(doc, packs, escapes, strict_queries)
    return _parse_doc(doc, packs, escapes, strict_queries)


def glued_line_start(line: bytes) -> int | None:
    """Find a complete JSON object glued behind a fragment: ``<partial>{"name":...}``.

    A writer that stops mid-line (a crash) leaves an unterminated fragment; the next
    complete line is then appended to it, and the two read as one line that is not
    JSON. This finds where the complete line starts so it is not lost.

    Args:
        line: a line (no newline) that failed to parse.

    Returns:
        The byte offset, greater than 0, of the first ``{"`` from which the rest of
        the line is one valid JSON object (the candidates are tried left to right, at
        most :data:`MAX_GLUED_CANDIDATES`); None when there is none. A line that is
        valid JSON never has one: an object nested in it is followed by the closing
        brace of its parent.
    """
    start = 0
    for _ in range(MAX_GLUED_CANDIDATES):
        start = line.find(b'{"', start + 1)
        if start < 0:
            return None
        rest = line[start:]
        try:
            doc = _orjson_loads(rest)
        except orjson.JSONDecodeError:
            try:
                rest.decode("utf-8")
                continue  # valid UTF-8 that orjson refuses: not JSON (the usual case)
            except UnicodeDecodeError:
                pass
            try:
                doc = _load_slow(rest)  # invalid UTF-8 is read as \xNN text
            except ParseError:
                continue
        if doc.__class__ is dict:
            return start
    return None
