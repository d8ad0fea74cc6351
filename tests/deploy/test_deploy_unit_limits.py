"""The alert service's systemd unit bounds what the service can take from the host."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "tracked-connections-alerts.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser["Service"]


def _bytes(size: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def test_unit_caps_descriptors_memory_and_tasks() -> None:
    service = _service()
    assert 1024 <= int(service["LimitNOFILE"]) <= 65536
    assert 128 * 1024**2 <= _bytes(service["MemoryMax"]) <= 4 * 1024**3
    assert int(service["TasksMax"]) >= 64


def test_unit_keeps_state_private() -> None:
    service = _service()
    assert service["StateDirectoryMode"] == "0700"
    assert service["UMask"] == "0077"
