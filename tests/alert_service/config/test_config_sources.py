"""Configuration of ingestion: sources (path or glob, timings), state, baseline modes."""

from __future__ import annotations

from typing import Any

import pytest

from alert_service.config import (
    DEFAULT_CHECKPOINT_EXPIRY_SECS,
    DEFAULT_STATE_DIR,
    build_config,
)
from alert_service.errors import ConfigError


def doc(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
        "notifiers": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}],
        "rules": [{"name": "r", "notify": ["local"], "remote_port": [4444]}],
    }
    base.update(extra)
    return base


def problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_config(document, "c.yaml", environ={})
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_defaults() -> None:
    config = build_config(doc(), "c.yaml", environ={})
    (src,) = config.sources
    assert (src.glob, src.partial_line_flush_secs, src.stale_after_secs) == (False, 5.0, 300.0)
    assert config.state_dir == DEFAULT_STATE_DIR
    assert config.checkpoint_expiry_secs == DEFAULT_CHECKPOINT_EXPIRY_SECS
    assert dict(config.rule_baseline) == {"r": "alert"}


def test_every_ingestion_option() -> None:
    config = build_config(
        doc(
            state_dir="/srv/alerts",
            checkpoint_expiry_secs=3600,
            sources=[
                {"path": "/var/log/osquery/osqueryd.results.log", "stale_after_secs": 60},
                {
                    "glob": "/var/log/fleet/*/osquery_result",
                    "start_at": "beginning",
                    "partial_line_flush_secs": 0.5,
                },
            ],
            rules=[
                {"name": "a", "notify": ["local"], "remote_port": [1], "baseline": "digest"},
                {"name": "b", "notify": ["local"], "remote_port": [2], "baseline": "none"},
            ],
        ),
        "c.yaml",
        environ={},
    )
    first, second = config.sources
    assert (first.glob, first.stale_after_secs) == (False, 60.0)
    assert (second.glob, second.path) == (True, "/var/log/fleet/*/osquery_result")
    assert second.partial_line_flush_secs == 0.5
    assert (config.state_dir, config.checkpoint_expiry_secs) == ("/srv/alerts", 3600.0)
    assert dict(config.rule_baseline) == {"a": "digest", "b": "none"}


def test_path_and_glob_are_exclusive_and_one_is_needed() -> None:
    found = problems(
        doc(sources=[{"path": "/a", "glob": "/b*"}, {"start_at": "end"}, {"glob": "/c*"}])
    )
    assert found == [
        "$.sources[0]: give exactly one of path or glob",
        "$.sources[1]: give exactly one of path or glob",
    ]


def test_bad_values_are_all_reported() -> None:
    found = problems(
        doc(
            state_dir="",
            sources=[{"path": "/a", "stale_after_secs": 0, "partial_line_flush_secs": -1}],
            rules=[{"name": "r", "notify": ["local"], "baseline": "sometimes"}],
        )
    )
    assert [f.split(":")[0] for f in found] == [
        "$.rules[0].baseline",
        "$.sources[0].partial_line_flush_secs",
        "$.sources[0].stale_after_secs",
        "$.state_dir",
    ]
