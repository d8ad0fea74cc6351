"""Exception tree of the alert service.

Every error the service raises on purpose derives from :class:`AlertServiceError`,
and each pipeline stage (source → parse → match → notify) has its own class, so a
caller can tell where a failure happened without parsing messages::

    AlertServiceError
    ├── ConfigError      invalid or unreadable configuration (holds every problem)
    ├── SourceError      a results log cannot be read
    ├── ParseError       one result-log line is not an osquery result
    ├── MatchError       a rule cannot be compiled (bad CIDR, regex, port range)
    ├── RecordError      a stored outbox record cannot be decoded
    └── NotifyError      a notification was not accepted (``retryable`` says whether
                         sending it again may succeed)

Errors of libraries (``OSError``, ``json``, ``yaml``, ``jsonschema``, ``requests``) are
translated into these classes in one place per stage and always chained with
``raise ... from err``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "AlertServiceError",
    "ConfigError",
    "ConfigProblem",
    "MatchError",
    "NotifyError",
    "ParseError",
    "RecordError",
    "SourceError",
    "resource_exhaustion",
]

_EXHAUSTION_ERRNOS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN, errno.ENOBUFS}
)


def resource_exhaustion(err: BaseException) -> str | None:
    """Name the exhausted resource when ``err`` (or what it wraps) says the machine ran
    out of descriptors, memory, processes or threads; None otherwise.

    Such a failure says nothing about the alert or its destination: it passes when the
    pressure does, so an attempt that met it is retried, never dead-lettered.

    Returns:
        e.g. ``"EMFILE (Too many open files)"``, ``"MemoryError"``,
        ``"can't start new thread"``; None for any other error.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return "MemoryError"
        if isinstance(current, OSError) and current.errno in _EXHAUSTION_ERRNOS:
            return f"{errno.errorcode[current.errno]} ({current.strerror})"
        if isinstance(current, RuntimeError) and "can't start new thread" in str(current):
            return "can't start new thread"
        reason = getattr(current, "reason", None)
        nested = [reason, current.__cause__, current.__context__, *current.args]
        current = next((n for n in nested if isinstance(n, BaseException)), None)
    return None


class AlertServiceError(Exception):
    """Base class of every error raised on purpose by :mod:`alert_service`."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem found in a configuration file.

    Attributes:
        file: path of the configuration file, as given by the user.
        path: JSON path of the offending value, e.g. ``$.rules[0].remote_port[1]``;
            ``$`` for the whole document.
        message: what is wrong, in one line.
    """

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.path}: {self.message}"


class ConfigError(AlertServiceError):
    """The configuration is unreadable or invalid.

    Args:
        problems: every problem found, already sorted in report order; never empty.

    Attributes:
        problems: the problems as given; ``str(err)`` puts one per line as
            ``FILE: $.json.path: message``.
    """

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SourceError(AlertServiceError):
    """A results log cannot be opened or read (for replay; ``run`` retries instead)."""


class ParseError(AlertServiceError):
    """One result-log line is not a valid osquery result line.

    The message says what is wrong (e.g. ``"unixTime": not an integer: 'abc'``); the
    pipeline adds where the line came from when it logs it.
    """


class RecordError(AlertServiceError):
    """A stored outbox record cannot be decoded (corrupt, or written by a newer version).

    Raised by :func:`alert_service.state.record.decode_record`; the delivery worker
    dead-letters the row.
    """


class MatchError(AlertServiceError):
    """A rule cannot be compiled.

    Args:
        message: what is wrong.
        where: location inside the rule, relative JSON path without the leading
            ``$``, e.g. ``.remote_address.include[2]``; empty for the whole rule.
    """

    def __init__(self, message: str, where: str = "") -> None:
        self.where = where
        super().__init__(message)


class NotifyError(AlertServiceError):
    """A notification was not delivered.

    Args:
        message: what happened; never contains secrets (URLs, header values).
        retryable: True when sending the same payload again may succeed (timeouts,
            connection errors, a reply cut short, HTTP 408/425/429 and 5xx); False when
            it cannot (other 4xx, redirects, invalid payloads, a request that cannot
            be made).
        retry_after_secs: server-requested wait before the next attempt, in seconds
            (from an HTTP ``Retry-After`` header), or None.
        error_type: short fixed label for logs: e.g. ``"timeout"``,
            ``"connection"``, ``"dns"``, ``"proxy"``, ``"tls"``, ``"transport"``,
            ``"request"``, ``"http_status"``, ``"encoding"`` or ``"internal"``
            (:func:`alert_service.notify.http.transport_error`; actions add their own).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after_secs: float | None = None,
        error_type: str = "http_status",
    ) -> None:
        self.retryable = retryable
        self.retry_after_secs = retry_after_secs
        self.error_type = error_type
        super().__init__(message)
