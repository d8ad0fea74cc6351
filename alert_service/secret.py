"""Secret values in the configuration: ``{env: NAME}`` instead of literal text.

A notifier option declared with ``{"$ref": "#/$defs/secret_string"}`` (defined in
schema/config.schema.json) accepts a plain string or ``{env: NAME}``;
:mod:`alert_service.config` replaces the latter with a :class:`Secret` read from the
environment when the config is loaded. A ``Secret``
prints as ``Secret(env:NAME)``, so it never reaches logs by accident; only transports
call :meth:`Secret.reveal`.
"""

from __future__ import annotations

from typing import final

__all__ = ["Secret", "reveal"]


@final
class Secret:
    """Text that must not be logged.

    Args:
        value: the secret text.
        source: where it came from, for messages (``env:NAME``); never the value.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """Return the secret text (for the transport only)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return self._value == other._value and self.source == other.source

    def __hash__(self) -> int:
        return hash((Secret, self.source, self._value))


def reveal(value: str | Secret) -> str:
    """Return ``value``'s text, revealing it if it is a :class:`Secret`."""
    return value.reveal() if isinstance(value, Secret) else value
