"""Configuration: a generic strict YAML loader and problem locator
(:mod:`~alert_service.config.strict`) under the product's model
(:mod:`~alert_service.config.model`)."""

from __future__ import annotations

from alert_service.config.model import (
    DEFAULT_CHECKPOINT_EXPIRY_SECS,
    DEFAULT_STATE_DIR,
    Config,
    NotifierConfig,
    base_schema,
    build_config,
    config_schema,
    load_config,
)
from alert_service.source import SourceConfig

__all__ = [
    "DEFAULT_CHECKPOINT_EXPIRY_SECS",
    "DEFAULT_STATE_DIR",
    "Config",
    "NotifierConfig",
    "SourceConfig",
    "base_schema",
    "build_config",
    "config_schema",
    "load_config",
]
