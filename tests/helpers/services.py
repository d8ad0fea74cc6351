"""The NATS and PostgreSQL servers the cluster tests use, or why they are skipped.

Both run on 127.0.0.1 on development and CI machines (NATS with JetStream on 4222,
PostgreSQL on 5432 with trust auth and a database ``test``). A test that needs one
skips with the reason when it cannot be reached, except under ``CI=true``, where it
fails instead: CI must run them.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest

__all__ = ["NATS_URL", "PG_DSN", "need_nats", "need_postgresql", "unique_name"]

NATS_URL = os.environ.get("TC_TEST_NATS_URL", "nats://127.0.0.1:4222")
PG_DSN = os.environ.get("TC_TEST_PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")


def _unavailable(what: str, reason: str) -> None:
    message = f"{what} not reachable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: these tests must run)")
    pytest.skip(message)


def need_nats() -> str:
    """Return the NATS URL after checking JetStream answers there (skip/fail otherwise)."""
    import nats  # noqa: PLC0415

    async def probe() -> None:
        client = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
        try:
            await client.jetstream().account_info()
        finally:
            await client.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), 5))
    except Exception as err:
        _unavailable(f"NATS JetStream at {NATS_URL}", f"{type(err).__name__}: {err}")
    return NATS_URL


def need_postgresql() -> str:
    """Return the PostgreSQL DSN after connecting once (skip/fail otherwise)."""
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as err:
        _unavailable(f"PostgreSQL at {PG_DSN!r}", f"{type(err).__name__}: {err}")
    return PG_DSN


def unique_name(prefix: str) -> str:
    """A stream, subject or schema name no other test run uses: ``<prefix>_<hex>``."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
