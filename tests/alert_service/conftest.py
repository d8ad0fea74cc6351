"""Fixtures of the alert service tests (helpers live in alerts_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alerts_support import ScriptedEndpoint, serve_endpoint


@pytest.fixture
def receiver() -> Iterator[ScriptedEndpoint]:
    """A webhook receiver on 127.0.0.1 at ``/alerts``, answering 200 unless scripted."""
    with serve_endpoint("/alerts") as state:
        yield state
