"""Base class of notifiers: a pure ``render`` and a separate ``send``.

Rendering builds the payload from an :class:`~alert_service.match.alert.Alert` without
side effects (golden-tested per notifier); sending is the transport and raises
:class:`~alert_service.errors.NotifyError`. Keeping them apart lets the durable outbox
(:mod:`alert_service.deliver`) keep the alert and render it again, identically, on
every attempt and after a restart; ``replay`` renders without sending.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from alert_service.match.alert import Alert

__all__ = ["Notifier"]


class Notifier(ABC):
    """One configured notification destination.

    Subclasses are registered with
    :func:`~alert_service.notify.registry.register_notifier` and declare (besides the
    ``default_*`` delivery settings below, overridable per entry):

    Attributes:
        type: the ``type`` value selecting the class in the config (set by the
            registry decorator).
        config_schema: JSON Schema (Draft 2020-12) of the class's own options — the
            notifier entry's keys other than ``name`` and ``type``. It is an object
            schema with ``properties`` and optional ``required``; unknown keys are
            rejected. ``{"$ref": "#/$defs/secret_string"}`` marks options that may
            come from ``{env: NAME}``.
        name: the configured notifier name (used in logs and rule ``notify`` lists).

    Args:
        name: the configured notifier name.
    """

    type: ClassVar[str] = ""
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}}
    default_rate_limit_per_minute: ClassVar[float | None] = None
    """Requests per minute when the entry sets no ``rate_limit_per_minute``; None = unlimited."""
    default_rate_limit_burst: ClassVar[int] = 1
    """Requests allowed back to back when the entry sets no ``rate_limit_burst``."""
    default_digest_threshold: ClassVar[int] = 0
    """Pending alerts above which a digest is sent (entry ``digest_threshold``); 0 = never."""

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    @abstractmethod
    def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
        """Build the notifier from validated options.

        Args:
            name: the configured notifier name.
            options: the entry's options, already valid against :attr:`config_schema`,
                with ``{env: NAME}`` replaced by :class:`~alert_service.secrets.Secret`.
        """

    @abstractmethod
    def render(self, alert: Alert) -> dict[str, Any]:
        """Return the JSON payload for ``alert``: a new dict, no I/O, ``alert`` untouched."""

    def render_digest(self, alerts: Sequence[Alert]) -> dict[str, Any] | None:
        """Return one payload listing ``alerts`` (a burst folded into one message), or None.

        Pure like :meth:`render`. The default returns None: the type sends no digests
        and the outbox delivers each alert on its own whatever ``digest_threshold`` says.
        A type that sends digests returns None too for alerts that do not fit in one
        message; the outbox then delivers them one by one.

        Args:
            alerts: at least two alerts, oldest first.
        """
        del alerts
        return None

    @classmethod
    def supports_digest(cls) -> bool:
        """True when the class overrides :meth:`render_digest`."""
        return cls.render_digest is not Notifier.render_digest

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        """Check what the options schema cannot (e.g. a secret's format).

        Called by the config loader with the entry's options, secrets resolved.

        Returns:
            ``(path inside the entry, message)`` per problem; empty when fine. Messages
            never contain secret values.
        """
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if options.get("digest_threshold") and not cls.supports_digest():
            problems.append(
                (("digest_threshold",), f"notifier type {cls.type!r} does not send digests")
            )
        return problems

    @abstractmethod
    def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
        """Deliver one rendered payload once (retrying is the caller's job).

        Args:
            payload: a value returned by :meth:`render`.
            idempotency_key: stable id of the alert, the same on every attempt, for
                receivers to drop duplicates.

        Raises:
            NotifyError: not delivered; ``retryable`` tells whether to try again.
        """

    def notify(self, alert: Alert) -> None:
        """Render ``alert`` and send it once (raises ``NotifyError``)."""
        self.send(self.render(alert), idempotency_key=alert.id)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections; the notifier is not used afterwards."""
