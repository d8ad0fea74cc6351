"""Skips that become failures in CI, where every capability is expected."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

__all__ = ["in_ci", "network_namespace", "require"]


def in_ci() -> bool:
    """True where the CI runner says so (``CI=true``)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip with ``reason`` when ``condition`` is false; in CI, fail instead.

    CI runs as root on a host with every facility these tests need, so a
    missing one there is a broken runner, not a reason to test less.
    """
    if condition:
        return
    if in_ci():
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@contextmanager
def network_namespace() -> Iterator[str]:
    """A new named network namespace (``ip netns add``) with loopback up; removed after."""
    require(shutil.which("ip") is not None, "the ip command (iproute2) is not installed")
    name = f"tcev{uuid.uuid4().hex[:8]}"
    added = subprocess.run(["ip", "netns", "add", name], capture_output=True, check=False)
    require(added.returncode == 0, f"ip netns add failed: {added.stderr.decode(errors='replace')}")
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
