"""Wire the stages: source → parse → match → notify.

:class:`Pipeline` takes complete lines (from :class:`~alert_service.source.FileFollower`
in ``run`` or :func:`~alert_service.source.read_whole_file` in ``replay``), parses
them, matches every event against the compiled rules and hands each alert to a
:class:`Dispatcher`: :class:`NotifyDispatcher` sends it (``run``),
:class:`PrintDispatcher` writes it as a JSON line (``replay``). Later stages slot in
here: baseline handling of ``counter`` 0 runs and dedup before dispatch, and an outbox
dispatcher that commits alerts and source checkpoints in one SQLite transaction.

Bad input never stops the pipeline: a :class:`~alert_service.errors.ParseError` is
counted and logged with the line's file and offset, and the next line is read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import BinaryIO, Protocol

from alert_service.config import Config
from alert_service.errors import NotifyError, ParseError, SourceError
from alert_service.logs import log_event
from alert_service.match import Alert, RuleSet
from alert_service.notify import DEFAULT_REGISTRY, Notifier, NotifierRegistry, RetryPolicy, deliver
from alert_service.notify.http import encode_json
from alert_service.parse import parse_line
from alert_service.source import (
    DEFAULT_MAX_LINE_BYTES,
    FileFollower,
    SourceLine,
    read_whole_file,
)
from alert_service.stats import Stats

__all__ = [
    "Dispatcher",
    "NotifyDispatcher",
    "Pipeline",
    "PrintDispatcher",
    "build_notifiers",
]

_log = logging.getLogger(__name__)


class Dispatcher(Protocol):
    """Where alerts go after matching."""

    def dispatch(self, alert: Alert) -> None:
        """Handle one alert; must not raise for delivery problems."""

    def close(self) -> None:
        """Release resources."""


def build_notifiers(
    config: Config, registry: NotifierRegistry = DEFAULT_REGISTRY
) -> dict[str, Notifier]:
    """Create one notifier per configured entry, keyed by name."""
    return {n.name: registry.create(n.name, n.type, n.options) for n in config.notifiers}


class NotifyDispatcher:
    """Send each alert to its rule's notifiers, with bounded retries.

    Args:
        notifiers: notifier name → notifier (every name a rule uses).
        policy: retry policy per notification.
        stats: counters (``sent``, ``failed``, ``retries``).
        wait: sleeps between attempts; returns True to stop retrying (service stopping).
    """

    def __init__(
        self,
        notifiers: Mapping[str, Notifier],
        policy: RetryPolicy,
        stats: Stats,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.notifiers = dict(notifiers)
        self.policy = policy
        self.stats = stats
        self._wait = wait if wait is not None else _plain_wait

    def dispatch(self, alert: Alert) -> None:
        """Deliver ``alert`` to each notifier of its rule; failures are counted and logged."""
        for name in alert.notify:
            notifier = self.notifiers[name]
            fields = {"alert_id": alert.id, "rule": alert.rule, "notifier": name}

            def on_retry(err: NotifyError, delay: float, fields: dict[str, str] = fields) -> None:
                self.stats.retries += 1
                log_event(
                    _log,
                    logging.WARNING,
                    "notify_retrying",
                    **fields,
                    error_type=err.error_type,
                    reason=str(err),
                    delay_secs=round(delay, 3),
                )

            try:
                attempts = deliver(notifier, alert, self.policy, wait=self._wait, on_retry=on_retry)
            except NotifyError as err:
                self.stats.failed += 1
                log_event(
                    _log,
                    logging.ERROR,
                    "notify_failed",
                    **fields,
                    error_type=err.error_type,
                    retryable=err.retryable,
                    reason=str(err),
                )
            except Exception as err:  # a notifier bug must not stop the service
                self.stats.failed += 1
                log_event(
                    _log,
                    logging.ERROR,
                    "notify_failed",
                    **fields,
                    error_type="internal",
                    reason=f"{type(err).__name__}: {err}",
                )
            else:
                self.stats.sent += 1
                log_event(_log, logging.INFO, "notify_sent", **fields, attempts=attempts)

    def close(self) -> None:
        """Close every notifier."""
        for notifier in self.notifiers.values():
            notifier.close()


def _plain_wait(secs: float) -> bool:
    time.sleep(secs)
    return False


class PrintDispatcher:
    """Write each alert as one compact JSON line (``replay``); sends nothing.

    The line is :meth:`Alert.as_dict` plus ``"notify": [notifier names]``.

    Args:
        stream: binary stream receiving UTF-8 JSON lines (e.g. ``sys.stdout.buffer``).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def dispatch(self, alert: Alert) -> None:
        """Write ``alert`` and flush."""
        doc = {**alert.as_dict(), "notify": list(alert.notify)}
        self.stream.write(encode_json(doc) + b"\n")
        self.stream.flush()

    def close(self) -> None:
        """Flush the stream (it is not closed)."""
        self.stream.flush()


class Pipeline:
    """Parse, match and dispatch lines; follow or replay the configured sources.

    Args:
        config: validated configuration.
        dispatcher: receives every alert.
        stats: counters to update (a new :class:`Stats` when None).

    Raises:
        MatchError: a rule does not compile (``load_config`` has already checked this).
    """

    def __init__(self, config: Config, dispatcher: Dispatcher, stats: Stats | None = None) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.stats = stats if stats is not None else Stats()
        self.rules = RuleSet(config.rules)

    def process_line(self, line: SourceLine) -> int:
        """Parse one line, match its events and dispatch the alerts.

        Returns:
            The number of alerts dispatched (0 for blank or malformed lines).
        """
        self.stats.lines_read += 1
        if not line.line.strip():
            return 0
        try:
            events = parse_line(line.line, self.config.known_packs)
        except ParseError as err:
            self.stats.parse_errors += 1
            log_event(
                _log,
                logging.WARNING,
                "line_parse_failed",
                path=line.path,
                inode=line.identity.inode,
                offset=line.offset,
                reason=str(err),
            )
            return 0
        sent = 0
        for event in events:
            self.stats.events += 1
            for alert in self.rules.match(event):
                self.stats.matches += 1
                sent += 1
                self.dispatcher.dispatch(alert)
        return sent

    def run(self, stop: threading.Event) -> None:
        """Follow every source until ``stop`` is set.

        Each source is polled every ``poll_interval_secs``; a source that has more data
        than one poll reads is polled again at once.
        """
        followers = [
            (
                src,
                FileFollower(
                    src.path,
                    start_at=src.start_at,
                    max_line_bytes=src.max_line_bytes,
                    stats=self.stats,
                ),
            )
            for src in self.config.sources
        ]
        due = [0.0] * len(followers)
        try:
            while not stop.is_set():
                now = time.monotonic()
                for i, (src, follower) in enumerate(followers):
                    if now < due[i]:
                        continue
                    for line in follower.poll():
                        self.process_line(line)
                    due[i] = now if follower.has_more else now + src.poll_interval_secs
                pause = max(0.0, min(due) - time.monotonic()) if due else 0.25
                if pause > 0:
                    stop.wait(pause)
        finally:
            for _, follower in followers:
                follower.close()

    def replay(self, paths: Iterable[str]) -> list[str]:
        """Read each file whole and process its lines.

        Args:
            paths: results logs, processed in order.

        Returns:
            The paths that could not be read (each logged); empty on full success.
        """
        max_line = max((s.max_line_bytes for s in self.config.sources), default=0)
        failed: list[str] = []
        for path in paths:
            try:
                for line in read_whole_file(
                    path, max_line_bytes=max_line or DEFAULT_MAX_LINE_BYTES, stats=self.stats
                ):
                    self.process_line(line)
            except SourceError as err:
                failed.append(path)
                log_event(_log, logging.ERROR, "replay_source_failed", path=path, reason=str(err))
        return failed
