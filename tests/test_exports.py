"""Every package declares __all__, and every name in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import alert_service
import extension
import osqueryd_standin

PACKAGES = (alert_service, extension, osqueryd_standin)

MODULES = sorted(
    {package.__name__ for package in PACKAGES}
    | {
        info.name
        for package in PACKAGES
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        if not info.name.endswith(".__main__")
    }
)


@pytest.mark.parametrize("name", MODULES)
def test_all_is_declared_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__"
    assert len(exported) == len(set(exported))
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ lists missing {item}"


def test_stage_packages_exist() -> None:
    for stage in ("source", "parse", "match", "notify"):
        assert f"alert_service.{stage}" in MODULES
