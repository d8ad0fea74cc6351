"""Enrich stage: owning process details and flow attributes of each socket."""

from __future__ import annotations

from extension.enrich.flow import community_id, direction_of, listening_endpoints
from extension.enrich.process import ProcessTracker

__all__ = ["ProcessTracker", "community_id", "direction_of", "listening_endpoints"]
