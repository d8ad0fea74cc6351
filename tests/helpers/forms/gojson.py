"""How Go's ``encoding/json`` accepts a value for a typed field (Fleet's decoder).

Fleet reads YAML by converting it to JSON (``ghodss/yaml``) and decoding that into Go
structs with ``encoding/json``; its agent-options validation uses a decoder with
``DisallowUnknownFields`` (``JSONStrictDecode`` in package server/fleet). The facts of
Go's decoder that matter here (Go ``encoding/json`` documentation):

* a JSON string goes only into a ``string`` field, a JSON ``true``/``false`` only into
  a ``bool``, a JSON number only into a number field, and only when it fits the type
  (no fraction, no sign for unsigned types, within range);
* ``null`` leaves a field as it is (no error);
* object keys match field names exactly or, failing that, case-insensitively; with
  ``DisallowUnknownFields`` any other key is an error (``json: unknown field``);
* a YAML float with no fraction (``10.0``) becomes the JSON number ``10``.

A type is one of the names in :data:`SCALARS`, ``RAW`` (anything), ``ListOf``,
``MapOf`` or ``Struct``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RAW", "SCALARS", "GoType", "ListOf", "MapOf", "Struct", "go_type_problems"]

RAW = "raw"
_RANGES: dict[str, tuple[int, int]] = {
    "int": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint": (0, 2**64 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
SCALARS = frozenset({"string", "bool", *_RANGES})


@dataclass(frozen=True)
class ListOf:
    item: GoType


@dataclass(frozen=True)
class MapOf:
    value: GoType


@dataclass(frozen=True)
class Struct:
    """A Go struct: JSON key → type. ``strict``: decoded with DisallowUnknownFields."""

    name: str
    fields: Mapping[str, GoType] = field(default_factory=dict)
    strict: bool = True


GoType = str | ListOf | MapOf | Struct


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _match_key(key: str, fields: Mapping[str, GoType]) -> str | None:
    if key in fields:
        return key
    folded = [name for name in fields if name.casefold() == key.casefold()]
    return folded[0] if folded else None


def go_type_problems(value: Any, go_type: GoType, where: str) -> list[str]:
    """Why Go's decoder would refuse ``value`` for a field of ``go_type`` at ``where``."""
    if value is None or go_type == RAW:
        return []
    if isinstance(go_type, str):
        return _scalar_problems(value, go_type, where)
    if isinstance(go_type, ListOf):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {_json_kind(value)}"]
        out: list[str] = []
        for i, item in enumerate(value):
            out += go_type_problems(item, go_type.item, f"{where}[{i}]")
        return out
    if not isinstance(value, dict):
        return [f"{where}: expected an object, got {_json_kind(value)}"]
    if isinstance(go_type, MapOf):
        out = []
        for key, item in value.items():
            out += go_type_problems(item, go_type.value, f"{where}.{key}")
        return out
    out = []
    for key, item in value.items():
        name = _match_key(str(key), go_type.fields)
        if name is None:
            if go_type.strict:
                out.append(
                    f'{where}: unknown field "{key}" (Fleet decodes {go_type.name} strictly)'
                )
            continue
        out += go_type_problems(item, go_type.fields[name], f"{where}.{key}")
    return out


def _scalar_problems(value: Any, go_type: str, where: str) -> list[str]:
    if go_type == "string":
        if isinstance(value, str):
            return []
        return [
            f"{where}: Go wants a string, got {_json_kind(value)} ({value!r}); "
            f'quote it: "{str(value).lower() if isinstance(value, bool) else value}"'
        ]
    if go_type == "bool":
        if isinstance(value, bool):
            return []
        return [f"{where}: Go wants true or false, got {_json_kind(value)} ({value!r})"]
    low, high = _RANGES[go_type]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return [f"{where}: Go wants a number ({go_type}), got {_json_kind(value)} ({value!r})"]
    if isinstance(value, float):
        if not value.is_integer():
            return [f"{where}: Go wants a whole number ({go_type}), got {value!r}"]
        value = int(value)
    if not low <= value <= high:
        return [f"{where}: {value} does not fit Go's {go_type} ({low}..{high})"]
    return []
