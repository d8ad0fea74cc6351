"""The state stage's configuration: the ``state`` section (which backend, where)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from alert_service.secret import Secret, reveal
from alert_service.state.db import STATE_FILE, StateTarget
from alert_service.state.postgres import PgTarget

__all__ = ["DEFAULT_PG_SCHEMA", "StateSettings"]

DEFAULT_PG_SCHEMA = "tracked_connections"
"""Default ``state.schema``: the PostgreSQL schema holding the tables."""


@dataclass(frozen=True, slots=True)
class StateSettings:
    """Where the state database lives.

    Attributes:
        backend: ``sqlite`` (default: ``state_dir/state.sqlite3``, no server) or
            ``postgresql`` (shared by every instance of a cluster).
        dsn: the PostgreSQL connection string or URI, from ``{env: NAME}`` or
            ``{file: /path}`` (it may hold a password).
        schema: the PostgreSQL schema of the tables (created when missing).
        claim_secs: how long a delivery worker's claim on outbox rows lasts
            (PostgreSQL), seconds (default 300).
    """

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: Secret | None = None
    schema: str = DEFAULT_PG_SCHEMA
    claim_secs: float = 300.0

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None) -> StateSettings:
        """Build from the validated ``state`` section with its secrets resolved."""
        if not raw:
            return cls()
        dsn = raw.get("dsn")
        return cls(
            backend=raw.get("backend", "sqlite"),
            dsn=dsn if isinstance(dsn, Secret) else None,
            schema=raw.get("schema", DEFAULT_PG_SCHEMA),
            claim_secs=float(raw.get("claim_secs", 300.0)),
        )

    def target(self, state_dir: str) -> StateTarget:
        """What :func:`~alert_service.state.db.open_state` opens.

        Raises:
            ValueError: ``postgresql`` without a ``dsn`` (``load_config`` refuses it).
        """
        if self.backend == "postgresql":
            if self.dsn is None:
                raise ValueError("state.backend postgresql needs state.dsn")
            return PgTarget(reveal(self.dsn), self.schema, self.claim_secs)
        return os.path.join(state_dir, STATE_FILE)

    def describe(self, state_dir: str) -> str:
        """Where the state is, for logs (never the DSN)."""
        if self.backend == "postgresql":
            return f"postgresql schema {self.schema} ({self.dsn})"
        return os.path.join(state_dir, STATE_FILE)
