"""The one escape every untrusted value passes through, and cutting that respects it.

Values from a monitored host (process names, paths, command lines, user names, host
identifiers, decorations, query and rule names) are controlled by whoever runs code
there. Every notifier shows them through :func:`literal`, with the markup of its
destination, so that no value can form a link, a mention, formatting or fake lines:

* every markup first makes invisible and layout-changing characters visible as text
  (:func:`visible`): the controls (Unicode category Cc: C0 with newline and tab, DEL,
  C1), the format characters (Cf: bidirectional controls such as U+202E, zero-width
  characters, U+FEFF, tag characters) and the line and paragraph separators (Zl, Zp:
  U+2028/9) become ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN``, so a value cannot hide,
  reorder or break the lines around it;
* ``slack`` (``mrkdwn`` text): ``&``, ``<`` and ``>`` become ``&amp;``, ``&lt;`` and
  ``&gt;``, the only characters Slack reads as control sequences (links, ``<!channel>``
  and ``<@U…>`` mentions; Slack API docs, "Formatting text for app surfaces", section
  "Escaping text"), and each formatting marker ``*`` ``_`` ``~`` `````` gets a
  zero-width space (U+200B) before it, so it cannot open bold, italics, strike or
  code. The notifier also sets ``"verbatim": true`` on those text objects, which turns
  off Slack's automatic linking of URLs and channel names (Slack Block Kit reference,
  "Text object");
* ``slack_code`` (inside a ``````` block, where Slack applies no formatting): the
  three characters above, and a zero-width space inside every ``````` so the value
  cannot close the block;
* ``teams`` (the text of an Adaptive Card ``TextRun``, which renders no Markdown;
  Adaptive Cards schema explorer, "TextRun", version 1.2): nothing else;
* ``plain`` (PagerDuty's summary, source and component): nothing else;
* ``json`` (a value inside a JSON document for a program, the generic webhook and
  PagerDuty's ``custom_details``): unchanged — JSON encoding is the escape there, and
  the receiver gets the exact value.

:func:`fit` cuts a value so that its escaped form fits a destination's limit, never
inside an escape, and marks the cut visibly (:data:`CUT_MARKER`). Limits are counted
in UTF-16 code units, as the chat services count characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, Literal

__all__ = [
    "CUT_MARKER",
    "MIN_FIELD_CHARS",
    "Markup",
    "cap_strings",
    "cut_marker",
    "fit",
    "json_bytes",
    "literal",
    "scaled",
    "shrink_to_fit",
    "units",
    "visible",
]

Markup = Literal["slack", "slack_code", "teams", "plain", "json"]

CUT_MARKER: Final = "…[cut {n} chars]"
"""Ends a value that was cut; ``{n}`` is how many characters of the value were left out."""

# Unicode categories Cc, Cf, Zl and Zp, as of Unicode 15.1 (Python 3.13's unicodedata;
# Python 3.11 has 14.0, a subset). A test proves the set covers every such character of
# the running Python; an unassigned code point of an older version may be in it.
_HIDDEN_EXCEPT_C0: Final = (
    "\x7f-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_INVISIBLE: Final = re.compile(f"[\x00-\x1f{_HIDDEN_EXCEPT_C0}]")
_INVISIBLE_BUT_NEWLINE: Final = re.compile(f"[\x00-\x09\x0b-\x1f{_HIDDEN_EXCEPT_C0}]")
_SLACK_SPECIAL: Final = re.compile(r"[&<>*_~`]")
_SLACK_CODE_SPECIAL: Final = re.compile(r"[&<>]")
_SLACK_ENTITIES: Final = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ZWSP: Final = "\u200b"


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"


def visible(text: str, *, keep_newlines: bool = False) -> str:
    """Return ``text`` with its invisible and layout-changing characters (see module
    docs) written as escapes, e.g. ESC as ``\\x1B`` and U+202E as ``\\u202E``.

    Args:
        text: an untrusted value.
        keep_newlines: leave ``\\n`` as it is (a whole report for a terminal or a
            page, whose lines are ours); every other control is still escaped.
    """
    pattern = _INVISIBLE_BUT_NEWLINE if keep_newlines else _INVISIBLE
    return pattern.sub(_visible, text)


def _slack(match: re.Match[str]) -> str:
    ch = match.group()
    return _SLACK_ENTITIES.get(ch) or _ZWSP + ch


def literal(text: str, markup: Markup) -> str:
    """Return ``text`` escaped so that ``markup`` shows it literally (see module docs).

    Args:
        text: an untrusted value.
        markup: where it is shown.

    Returns:
        The escaped text (``text`` itself for ``json``).
    """
    if markup == "json":
        return text
    out = visible(text)
    if markup == "slack":
        return _SLACK_SPECIAL.sub(_slack, out)
    if markup == "slack_code":
        out = _SLACK_CODE_SPECIAL.sub(lambda m: _SLACK_ENTITIES[m.group()], out)
        return out.replace("```", "`" + _ZWSP + "``")
    return out


def units(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units (characters outside the
    Basic Multilingual Plane count 2)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def cut_marker(left_out: int) -> str:
    """Return the marker ending a value of which ``left_out`` characters were cut."""
    return CUT_MARKER.format(n=left_out)


def fit(text: str, max_units: int, markup: Markup) -> str:
    """Return ``literal(text, markup)``, cut so that it is at most ``max_units`` long.

    A cut value keeps the longest prefix whose escaped form plus the marker
    (:func:`cut_marker`, saying how many characters were left out) fits; the cut never
    falls inside an escape (``&amp;``, ``\\x0A``) since the prefix is cut before
    escaping.

    Args:
        text: an untrusted value.
        max_units: the limit in UTF-16 code units, at least 1.
        markup: where it is shown (:func:`literal`).

    Returns:
        The escaped, possibly cut text; only the marker's own text is not escaped (it
        holds no markup).
    """
    whole = literal(text, markup)
    if units(whole) <= max_units:
        return whole
    # Escaping never shortens, so the kept prefix is at most max_units long.
    lo, hi = 0, min(len(text), max_units)
    best = ""
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = literal(text[:mid], markup) + cut_marker(len(text) - mid)
        if units(candidate) <= max_units:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if not best:  # not even the marker fits: cut the marker itself
        return cut_marker(len(text))[:max_units]
    return best


MIN_FIELD_CHARS: Final = 32
"""The smallest cap :func:`shrink_to_fit` gives a value: enough to recognise it."""


def cap_strings(value: Any, max_chars: int) -> Any:
    """Return a copy of a JSON value whose texts (keys excepted) are at most
    ``max_chars`` long, each cut one ending in :func:`cut_marker`.

    For destinations that get the values themselves (``json`` markup): a value short
    enough comes through exactly.
    """
    if isinstance(value, str):
        return value if len(value) <= max_chars else fit(value, max_chars, "json")
    if isinstance(value, dict):
        return {k: cap_strings(v, max_chars) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cap_strings(v, max_chars) for v in value]
    return value


def json_bytes(payload: Any) -> int:
    """Size of ``payload`` as compact UTF-8 JSON, bytes (lone surrogates counted as
    their ``\\u`` escapes, as the encoder writes them)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return len(json.dumps(payload, separators=(",", ":")))


def shrink_to_fit(build: Callable[[float], dict[str, Any]], max_bytes: int) -> dict[str, Any]:
    """Build a payload that fits ``max_bytes`` when encoded.

    ``build(scale)`` renders the payload with every per-value cap multiplied by
    ``scale`` (and kept at least :data:`MIN_FIELD_CHARS`). It is called with 1, then
    with halves of that, until the payload fits or every cap is at its floor; the last
    payload is returned either way, so an alert is never refused for its size (the
    floor of a single alert is a few KiB).

    Args:
        build: pure renderer taking the scale, ``0 < scale <= 1``.
        max_bytes: the destination's body limit, bytes.
    """
    scale = 1.0
    while True:
        payload = build(scale)
        if json_bytes(payload) <= max_bytes or scale < 1e-4:
            return payload
        scale /= 2


def scaled(cap: int, scale: float) -> int:
    """``cap * scale``, at least :data:`MIN_FIELD_CHARS`."""
    return max(MIN_FIELD_CHARS, int(cap * scale))
