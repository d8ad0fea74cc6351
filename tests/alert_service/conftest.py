"""Fixtures of the alert service tests (helpers live in alerts_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alerts_support import Receiver, serve_receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1, answering from ``receiver.script`` (default 200)."""
    with serve_receiver() as state:
        yield state
