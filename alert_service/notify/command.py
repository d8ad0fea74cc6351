"""Response action ``command``: run a local program for each alert.

The program runs **without a shell**: ``command`` is an argument list, and each
argument is a template in which ``{placeholder}`` is replaced by one value of the
alert. A value becomes (part of) exactly one argument, whatever it contains, so a
process named ``x; rm -rf /`` or ``$(reboot)`` reaches the program as plain text.
Literal braces are written ``{{`` and ``}}``. The program itself (the first item)
cannot contain placeholders.

Placeholders: every column of the table (``{pid}``, ``{remote_address}``,
``{remote_port}``, ``{name}``, ``{path}``, ``{cmdline}``, ``{username}``,
``{community_id}``, … see docs/columns.md) and ``{host}`` (host identifier),
``{rule}``, ``{alert_id}``, ``{query}``, ``{action}``, ``{unix_time}``. A value the
row does not have becomes the empty string. Values may start with ``-``: put ``--``
before them when the program parses options.

The program gets the alert (:meth:`~alert_service.match.alert.Alert.as_dict`) as
JSON on stdin, a small environment (``PATH``, ``LANG``,
``TRACKED_CONNECTIONS_ALERT_ID`` plus the configured ``env``; the service's own
environment, which holds webhook secrets, is not passed), its own process group
(killed as a whole on timeout) and ``/`` as working directory.

A baseline digest (a rule with ``baseline: digest`` folding the new rows of a
counter-0 run into one alert) is refused, not run for its first row only.

Outcome: exit status 0 is success. Any other status is an error, retried only when
listed in ``retry_exit_codes`` (default none: a response action that failed half-way
should not run again blindly); a timeout kills the process group and is not
retried; a program that cannot be started is not retried, unless the machine was out of
file descriptors, memory or processes (``EMFILE``, ``ENFILE``, ``ENOMEM``, ``EAGAIN``):
then it is retried like any temporary failure.

Config (one entry of ``notifiers``; a rule's ``notify`` list names it)::

    - name: isolate
      type: command
      command: [/usr/local/sbin/isolate-host, --host, "{host}", --pid, "{pid}", --, "{name}"]
      timeout_secs: 30            # default 30
      retry_exit_codes: [75]      # default []; EX_TEMPFAIL is a common choice
      env:                        # optional; values may be {env: NAME}
        ISOLATE_TOKEN: {env: ISOLATE_TOKEN}

The outbox of the alert service delivers it like any notifier, with its rate limits
(default 30 runs per minute, no burst; an entry's ``rate_limit_per_minute`` overrides
it), retries and dedup.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from alert_service.errors import NotifyError, resource_exhaustion
from alert_service.match.alert import Alert
from alert_service.notify.base import Notifier
from alert_service.notify.registry import register_notifier
from alert_service.secret import Secret, reveal
from extension.columns import COLUMN_NAMES

if TYPE_CHECKING:
    import subprocess

# subprocess is imported when a command first runs: the configuration loader imports
# every notifier for its settings, and `replay` never runs one.

__all__ = ["PLACEHOLDERS", "CommandNotifier", "CommandSettings", "substitute"]

ALERT_FIELDS: Final[tuple[str, ...]] = ("host", "rule", "alert_id", "query", "action", "unix_time")
PLACEHOLDERS: Final[frozenset[str]] = frozenset(ALERT_FIELDS) | frozenset(COLUMN_NAMES)
"""Names usable as ``{name}`` in a command argument."""

_SAFE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_OUTPUT_SNIPPET_CHARS: Final = 300
_KILL_WAIT_SECS: Final = 5.0
_SECRET = {"$ref": "#/$defs/secret_string"}


def substitute(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{name}`` fields of one argument template.

    Only plain names are accepted (no ``{a.b}``, ``{a[0]}``, conversions or format
    specs), so a template cannot reach attributes of anything.

    Args:
        template: one argument, e.g. ``"--pid={pid}"``.
        values: placeholder name → text.

    Returns:
        The argument with every field replaced by its value, verbatim.

    Raises:
        ValueError: unbalanced braces, an unknown name, or a field with attributes,
            indexes, ``!r`` or ``:spec``; the message names the offending field.
    """
    out: list[str] = []
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{err} (write {{{{ and }}}} for literal braces)") from err
    for literal, name, spec, conversion in fields:
        out.append(literal)
        if name is None:
            continue
        field_text = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        if spec or conversion or name not in values:
            known = name in values or name in PLACEHOLDERS
            hint = "only {name} is allowed" if known else "unknown placeholder"
            raise ValueError(f"{hint}: {{{field_text}}}")
        out.append(values[name])
    return "".join(out)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def placeholder_values(alert: Mapping[str, Any]) -> dict[str, str]:
    """Placeholder name → text for one alert payload (:meth:`Alert.as_dict` shape)."""
    connection = alert.get("connection") or {}
    values = {name: _text(connection.get(name)) for name in COLUMN_NAMES}
    values.update(
        host=_text(alert.get("host")),
        rule=_text(alert.get("rule")),
        alert_id=_text(alert.get("id")),
        query=_text(alert.get("query")),
        action=_text(alert.get("action")),
        unix_time=_text(alert.get("unix_time")),
    )
    return values


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Options of a command notifier.

    Attributes:
        command: program and argument templates; the program has no placeholders.
        timeout_secs: wall-clock limit of one run, seconds.
        retry_exit_codes: exit statuses that mean "try again later".
        env: extra environment variables; values may be secrets.
    """

    command: tuple[str, ...]
    timeout_secs: float = 30.0
    retry_exit_codes: frozenset[int] = frozenset()
    env: Mapping[str, str | Secret] = field(default_factory=dict)


@register_notifier("command")
class CommandNotifier(Notifier):
    """Run one local program per alert, arguments passed as a list (no shell).

    Args:
        name: configured notifier name.
        settings: validated options.
    """

    default_rate_limit_per_minute: ClassVar[float | None] = 30.0
    """Conservative default: one run every 2 s (entry ``rate_limit_per_minute``)."""
    default_rate_limit_burst: ClassVar[int] = 1

    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {
            "command": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "minLength": 1},
            },
            "timeout_secs": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            "retry_exit_codes": {
                "type": "array",
                "uniqueItems": True,
                "items": {"type": "integer", "minimum": 1, "maximum": 255},
            },
            "env": {
                "type": "object",
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": _SECRET,
            },
        },
        "required": ["command"],
    }

    def __init__(self, name: str, settings: CommandSettings) -> None:
        super().__init__(name)
        self.settings = settings

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Check the templates: a literal program, known plain placeholders in arguments."""
        problems = super().check_options(options)
        raw = options.get("command")
        # Items of another type are the schema's to report; skip them here.
        command: list[object] = list(raw) if isinstance(raw, list | tuple) else []
        program = command[0] if command else None
        if isinstance(program, str) and ("{" in program or "}" in program):
            problems.append((("command", 0), "the program cannot contain placeholders or braces"))
        probe = dict.fromkeys(PLACEHOLDERS, "")
        known = ", ".join(f"{{{n}}}" for n in sorted(PLACEHOLDERS))
        for i, template in enumerate(command[1:], start=1):
            if not isinstance(template, str):
                continue
            try:
                substitute(template, probe)
            except ValueError as err:
                extra = f"; known: {known}" if "unknown placeholder" in str(err) else ""
                problems.append((("command", i), f"{err}{extra}"))
        return problems

    @classmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build from validated options (see the module docs for the keys)."""
        settings = CommandSettings(
            command=tuple(options["command"]),
            timeout_secs=float(options.get("timeout_secs", 30.0)),
            retry_exit_codes=frozenset(options.get("retry_exit_codes", ())),
            env=dict(options.get("env", {})),
        )
        return cls(name, settings)

    def render(self, alert: Alert) -> dict[str, Any]:
        """Return ``{"argv": [program, args...], "alert": Alert.as_dict()}``.

        Raises:
            NotifyError: a template names an unknown placeholder (not retryable;
                ``check-config`` reports it first, via :meth:`check_options`).
        """
        alert_dict = alert.as_dict()
        return {"argv": self.argv_for(alert_dict), "alert": alert_dict}

    def argv_for(self, alert_dict: Mapping[str, Any]) -> list[str]:
        """The argument list for one alert payload (:meth:`Alert.as_dict` shape)."""
        values = placeholder_values(alert_dict)
        program, *templates = self.settings.command
        try:
            return [program, *(substitute(t, values) for t in templates)]
        except ValueError as err:
            raise NotifyError(
                f"{self.name}: {err}", retryable=False, error_type="internal"
            ) from err

    def _environment(self, idempotency_key: str) -> dict[str, str]:
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8"}
        env.update({k: reveal(v).replace("\x00", "\\x00") for k, v in self.settings.env.items()})
        env["TRACKED_CONNECTIONS_ALERT_ID"] = idempotency_key
        return env

    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """Run the program once and wait for it.

        Args:
            payload: from :meth:`render`; ``argv`` is recomputed from ``alert`` when
                absent.
            idempotency_key: the alert id, also in ``TRACKED_CONNECTIONS_ALERT_ID``.

        Raises:
            NotifyError: ``error_type`` ``"internal"`` (a baseline digest; not retryable),
                ``"spawn"`` (cannot start; not retryable), ``"resources"`` (cannot
                start for lack of descriptors, memory or processes: ``EMFILE``,
                ``ENOMEM``, ``EAGAIN``; retryable),
                ``"timeout"`` (killed after ``timeout_secs``; not retryable) or
                ``"exit_status"`` (non-zero; retryable when listed in
                ``retry_exit_codes``).
        """
        alert_dict = payload.get("alert", {})
        if alert_dict.get("kind") == "baseline_digest":
            raise NotifyError(
                f"{self.name}: a command runs for one connection, not for a baseline digest "
                f"of {alert_dict.get('row_count')} rows; use baseline: alert in rules that "
                "name this action",
                retryable=False,
                error_type="internal",
            )
        argv = payload.get("argv")
        if not isinstance(argv, Sequence) or isinstance(argv, str):
            argv = self.argv_for(alert_dict)
        stdin = json.dumps(alert_dict, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "surrogateescape"
        )
        import subprocess  # noqa: PLC0415 - see the imports

        try:
            proc = subprocess.Popen(
                # A NUL would end the argument at exec(2): write it as osquery does.
                # The parser already does so for new lines; rows queued before it did
                # may still hold one.
                [str(a).replace("\x00", "\\x00") for a in argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._environment(idempotency_key),
                cwd="/",
                close_fds=True,
                start_new_session=True,
            )
        except OSError as err:
            # Out of descriptors, memory or processes: the program is fine, the
            # machine is not; try again later.
            exhausted = resource_exhaustion(err) is not None
            raise NotifyError(
                f"{self.name}: cannot start {argv[0]}: {err.strerror or err}",
                retryable=exhausted,
                error_type="resources" if exhausted else "spawn",
            ) from err
        try:
            output, _ = proc.communicate(stdin, timeout=self.settings.timeout_secs)
        except subprocess.TimeoutExpired as err:
            _kill_group(proc)
            raise NotifyError(
                f"{self.name}: {argv[0]} timed out after {self.settings.timeout_secs:g} s "
                "and was killed",
                retryable=False,
                error_type="timeout",
            ) from err
        if proc.returncode != 0:
            snippet = _snippet(output)
            raise NotifyError(
                f"{self.name}: {argv[0]} exited with status {proc.returncode}"
                + (f": {snippet}" if snippet else ""),
                retryable=proc.returncode in self.settings.retry_exit_codes,
                error_type="exit_status",
            )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import subprocess  # noqa: PLC0415 - see the imports

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=_KILL_WAIT_SECS)


def _snippet(output: bytes | None) -> str:
    if not output:
        return ""
    text = output.decode("utf-8", "replace")[-_OUTPUT_SNIPPET_CHARS:]
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())
