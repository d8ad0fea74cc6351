"""Extension registrations held by the osqueryd stand-in.

Part of the osqueryd stand-in (a test double, not osquery). Re-implements the
checks osqueryd makes in ``registerExtension``/``deregisterExtension`` with
its exact messages (upstream osquery 5.23 osquery/extensions/interface.cpp,
osquery/registry/registry_factory.cpp addBroadcast, osquery/core/tables.cpp
addExternal, osquery/utils/info/version.cpp versionAtLeast).

The registry is in memory and thread-safe. Internal (core) items are a small
fixed set: the stand-in's own tables plus ``logger/filesystem``,
``config/filesystem`` and ``sql/sql``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from osqueryd_standin.errors import StandinError

__all__ = [
    "INTERNAL_REGISTRIES",
    "ExtensionRecord",
    "RegistrationError",
    "Registry",
    "RouteList",
    "version_at_least",
]

RouteList = list[dict[str, str]]
"""An ExtensionPluginResponse used as route info: a list of string maps."""

INTERNAL_REGISTRIES: tuple[str, ...] = (
    "config",
    "config_parser",
    "database",
    "distributed",
    "enroll",
    "event_publisher",
    "event_subscriber",
    "logger",
    "numeric_monitoring",
    "sql",
    "table",
)
"""Registry names osqueryd creates (CREATE_REGISTRY in upstream osquery/)."""

MIN_SDK_VERSION = "1.7.7"
"""kSDKVersionChanges in osquery/extensions/interface.cpp."""


class RegistrationError(StandinError):
    """registerExtension failed; ``message`` is osqueryd's status message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ExtensionRecord:
    """A registered extension.

    Attributes:
        uuid: the route uuid osqueryd assigned (1..65535).
        name, version, sdk_version, min_sdk_version: InternalExtensionInfo.
        registry: registry name → plugin name → route list, as broadcast.
    """

    uuid: int
    name: str
    version: str
    sdk_version: str
    min_sdk_version: str
    registry: Mapping[str, Mapping[str, RouteList]] = field(default_factory=dict)


def _stoi_prefix(text: str) -> int:
    """``std::stoi``: leading whitespace, sign, decimal digits prefix.

    Raises:
        ValueError: no digits (``std::invalid_argument``).
    """
    body = text.lstrip(" \t\n\v\f\r")
    sign = 1
    if body[:1] in ("+", "-"):
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    digits = ""
    for ch in body:
        if not ("0" <= ch <= "9"):
            break
        digits += ch
    if not digits:
        raise ValueError(text)
    return sign * int(digits)


def version_at_least(required: str, build: str) -> bool:
    """osquery's ``versionAtLeast(v, sdk)``: is ``build`` at least ``required``?

    "0.0.0" on either side passes. Dotted chunks compare numerically; a chunk
    that is not a number compares as a string and can only fail. An empty
    version has no chunks and passes (osquery/utils/info/version.cpp).
    """
    if required == "0.0.0" or build == "0.0.0":
        return True
    required_parts = [p for p in required.split(".") if p]
    build_parts = [p for p in build.split(".") if p]
    for index, chunk in enumerate(build_parts):
        if len(required_parts) <= index:
            return True
        try:
            have = _stoi_prefix(chunk)
            want = _stoi_prefix(required_parts[index])
        except ValueError:
            if chunk < required_parts[index]:
                return False
            continue
        if have < want:
            return False
        if have > want:
            return True
    return True


class Registry:
    """Registered extensions and the registry items they own.

    Args:
        builtin_tables: names of tables the stand-in serves itself.
        rng: random source for uuids (tests may seed one).
    """

    def __init__(self, builtin_tables: Iterable[str], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._cond = threading.Condition()
        self._extensions: dict[int, ExtensionRecord] = {}
        self._internal: dict[str, set[str]] = {name: set() for name in INTERNAL_REGISTRIES}
        self._internal["table"].update(builtin_tables)
        self._internal["logger"].add("filesystem")
        self._internal["config"].add("filesystem")
        self._internal["sql"].add("sql")
        # registry name -> item name -> owner uuid
        self._external: dict[str, dict[str, int]] = {}

    def _new_uuid(self) -> int:
        # osqueryd: static_cast<uint16_t>(rand() + 1), unique among live ones.
        # 0 is the manager's own uuid, so it is skipped here.
        while True:
            uuid = (self._rng.randrange(0, 2**31 - 1) + 1) & 0xFFFF
            if uuid != 0 and uuid not in self._extensions:
                return uuid

    def _item_exists(self, registry: str, item: str) -> bool:
        return item in self._internal.get(registry, set()) or item in self._external.get(
            registry, {}
        )

    def register(
        self,
        name: str,
        version: str,
        sdk_version: str,
        min_sdk_version: str,
        registry: Mapping[str, Mapping[str, Sequence[Mapping[str, str]]]],
    ) -> int:
        """Register an extension and attach its registry items.

        Args:
            name, version, sdk_version, min_sdk_version: InternalExtensionInfo.
            registry: ExtensionRegistry, e.g. ``{"table": {"t": [route, ...]}}``.

        Returns:
            The new uuid.

        Raises:
            RegistrationError: with osqueryd's message: "Duplicate extension
                registered", "Incompatible extension SDK version", or "Failed
                adding registry: " + one of "Registry item X conflicts with
                another item of the same name.", "Unknown registry: X",
                "Invalid route info".
        """
        with self._cond:
            if any(rec.name == name for rec in self._extensions.values()):
                raise RegistrationError("Duplicate extension registered")
            if not version_at_least(MIN_SDK_VERSION, sdk_version):
                raise RegistrationError("Incompatible extension SDK version")
            uuid = self._new_uuid()
            broadcast = {
                reg: {item: [dict(r) for r in routes] for item, routes in sorted(items.items())}
                for reg, items in sorted(registry.items())
            }
            for reg, items in broadcast.items():
                for item in items:
                    if self._item_exists(reg, item):
                        raise RegistrationError(
                            "Failed adding registry: Registry item "
                            f"{item} conflicts with another item of the same name."
                        )
            for reg, items in broadcast.items():
                if reg not in self._internal:
                    raise RegistrationError(f"Failed adding registry: Unknown registry: {reg}")
                if reg == "table":
                    for routes in items.values():
                        if not routes:
                            raise RegistrationError("Failed adding registry: Invalid route info")
            for reg, items in broadcast.items():
                owned = self._external.setdefault(reg, {})
                for item in items:
                    owned[item] = uuid
            self._extensions[uuid] = ExtensionRecord(
                uuid, name, version, sdk_version, min_sdk_version, broadcast
            )
            self._cond.notify_all()
            return uuid

    def deregister(self, uuid: int) -> bool:
        """Remove an extension and detach its items.

        Returns:
            False when the uuid is not registered ("No extension UUID found").
        """
        with self._cond:
            if uuid not in self._extensions:
                return False
            del self._extensions[uuid]
            for items in self._external.values():
                for item in [i for i, owner in items.items() if owner == uuid]:
                    del items[item]
            self._cond.notify_all()
            return True

    def extensions(self) -> dict[int, ExtensionRecord]:
        """A copy of the registered extensions by uuid."""
        with self._cond:
            return dict(self._extensions)

    def uuids(self) -> list[int]:
        """Registered uuids, ascending."""
        with self._cond:
            return sorted(self._extensions)

    def external_tables(self) -> dict[str, int]:
        """Extension table name → owner uuid."""
        with self._cond:
            return dict(self._external.get("table", {}))

    def builtin_tables(self) -> list[str]:
        """Names of the stand-in's own tables."""
        with self._cond:
            return sorted(self._internal["table"])

    def registry_rows(self) -> list[dict[str, str | int]]:
        """Rows of the ``osquery_registry`` table.

        Returns:
            Dicts with registry, name, owner_uuid (0 for core items),
            internal (1/0) and active (always 1 here), sorted by registry then
            name.
        """
        with self._cond:
            rows: list[dict[str, str | int]] = []
            for reg, items in self._internal.items():
                for item in items:
                    rows.append(
                        {"registry": reg, "name": item, "owner_uuid": 0, "internal": 1, "active": 1}
                    )
            for reg, owned in self._external.items():
                for item, owner in owned.items():
                    rows.append(
                        {
                            "registry": reg,
                            "name": item,
                            "owner_uuid": owner,
                            "internal": 0,
                            "active": 1,
                        }
                    )
            rows.sort(key=lambda r: (str(r["registry"]), str(r["name"])))
            return rows

    def wait_for(self, predicate_table: str, timeout_secs: float) -> bool:
        """Block until an extension table of that name is attached.

        Args:
            predicate_table: table name.
            timeout_secs: maximum wait, seconds.

        Returns:
            True when attached, False on timeout.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    predicate_table in self._external.get("table", {})
                    or predicate_table in self._internal["table"]
                ),
                timeout=timeout_secs,
            )

    def wait_for_extension(self, name: str, timeout_secs: float) -> bool:
        """Block until an extension with that InternalExtensionInfo.name registers."""
        with self._cond:
            return self._cond.wait_for(
                lambda: any(r.name == name for r in self._extensions.values()),
                timeout=timeout_secs,
            )
