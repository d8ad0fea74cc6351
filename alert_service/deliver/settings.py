"""Per-destination delivery settings: rate limit and digest, from a notifier entry.

Each entry of ``notifiers`` may set (whatever its ``type``)::

    rate_limit_per_minute: 60   # requests per minute; 0 = unlimited (type default)
    rate_limit_burst: 1         # requests allowed back to back (type default)
    digest_threshold: 10        # more due alerts than this → one digest (0 = never)
    digest_max_alerts: 100      # alerts folded into one digest at most

Defaults come from the notifier class (:attr:`Notifier.default_rate_limit_per_minute`,
:attr:`Notifier.default_rate_limit_burst`, :attr:`Notifier.default_digest_threshold`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from alert_service.notify.base import Notifier

__all__ = ["COMMON_NOTIFIER_OPTIONS", "DEFAULT_DIGEST_MAX_ALERTS", "DestinationSettings"]

DEFAULT_DIGEST_MAX_ALERTS: Final = 100

COMMON_NOTIFIER_OPTIONS: Final[tuple[str, ...]] = (
    "rate_limit_per_minute",
    "rate_limit_burst",
    "digest_threshold",
    "digest_max_alerts",
)
"""Delivery options every notifier entry accepts (schema: ``$defs.notifier``)."""


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """How one destination's worker paces and folds its sends.

    Attributes:
        rate_limit_per_minute: requests per minute, or None for no limit.
        rate_limit_burst: requests allowed back to back.
        digest_threshold: when more alerts than this are due, they are sent as one
            digest; 0 = never (also when the type has no digest format).
        digest_max_alerts: most alerts in one digest.
    """

    rate_limit_per_minute: float | None = None
    rate_limit_burst: int = 1
    digest_threshold: int = 0
    digest_max_alerts: int = DEFAULT_DIGEST_MAX_ALERTS

    @classmethod
    def for_notifier(
        cls, notifier_cls: type[Notifier], options: Mapping[str, Any]
    ) -> DestinationSettings:
        """Return the settings of one entry: its options, else the type's defaults."""
        rate = options.get("rate_limit_per_minute", notifier_cls.default_rate_limit_per_minute)
        threshold = int(options.get("digest_threshold", notifier_cls.default_digest_threshold))
        if not notifier_cls.supports_digest():
            threshold = 0
        return cls(
            rate_limit_per_minute=float(rate) if rate else None,
            rate_limit_burst=int(
                options.get("rate_limit_burst", notifier_cls.default_rate_limit_burst)
            ),
            digest_threshold=threshold,
            digest_max_alerts=int(options.get("digest_max_alerts", DEFAULT_DIGEST_MAX_ALERTS)),
        )
