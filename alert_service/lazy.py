"""Names of a package imported from their module on first use (PEP 562).

A package lists, in a ``{name: module}`` map, the names whose modules are costly to
import (an HTTP stack, a metrics server) and sets its module ``__getattr__`` to
:func:`lazy_getattr`'s result: ``package.Name`` then imports the module when first
read and keeps the value in the package's namespace, so later reads cost nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(
    package: str, lazy: Mapping[str, str], namespace: dict[str, Any]
) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``.

    Args:
        package: the package's ``__name__`` (for the error message).
        lazy: name → the module (dotted path) that defines it.
        namespace: the package's ``globals()``, where a value is kept once imported.

    Returns:
        ``__getattr__(name)``: the value of ``name`` from its module.

    Raises:
        AttributeError: (from the returned function) ``name`` is not in ``lazy``.
    """

    def lazy_attribute(name: str) -> object:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return lazy_attribute
