"""The notifier registry: ``type`` name → notifier class.

Built-in notifiers register on import with ``@register_notifier("webhook")``;
:mod:`alert_service.notify` imports each built-in module by name (no scanning, no dotted
paths from config). Tests that need another notifier build their own
:class:`NotifierRegistry` instead of changing the default one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from alert_service.notify.base import Notifier

__all__ = ["DEFAULT_REGISTRY", "NotifierRegistry", "register_notifier"]

N = TypeVar("N", bound=type[Notifier])


class NotifierRegistry:
    """Maps notifier ``type`` names to :class:`~alert_service.notify.base.Notifier` classes."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Notifier]] = {}

    def register(self, type_name: str) -> Callable[[N], N]:
        """Return a class decorator registering a notifier class under ``type_name``.

        The decorator sets ``cls.type = type_name``.

        Raises:
            ValueError: another class already uses ``type_name``.
        """

        def decorate(cls: N) -> N:
            existing = self._classes.get(type_name)
            if existing is not None and existing is not cls:
                raise ValueError(f"notifier type {type_name!r} is already registered")
            cls.type = type_name
            self._classes[type_name] = cls
            return cls

        return decorate

    def types(self) -> tuple[str, ...]:
        """Registered type names, sorted."""
        return tuple(sorted(self._classes))

    def get(self, type_name: str) -> type[Notifier]:
        """Return the class registered as ``type_name``.

        Raises:
            KeyError: no such type.
        """
        return self._classes[type_name]

    def create(self, name: str, type_name: str, options: Mapping[str, Any]) -> Notifier:
        """Build a notifier named ``name`` of type ``type_name`` from validated options."""
        return self.get(type_name).from_config(name, options)


DEFAULT_REGISTRY = NotifierRegistry()
"""The registry the config loader and pipeline use unless given another."""

register_notifier = DEFAULT_REGISTRY.register
"""Decorator registering a class in :data:`DEFAULT_REGISTRY`: ``@register_notifier("webhook")``."""
